"""The notification service: turns the other services' events into notifications for their
users, delivers them through a pluggable sender, and lets users read and mark them."""
