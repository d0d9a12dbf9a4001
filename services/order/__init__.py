"""The order service: rides as event-sourced orders, placed through the ride saga."""
