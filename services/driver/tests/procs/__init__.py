"""Programs the driver tests start as processes of their own."""
