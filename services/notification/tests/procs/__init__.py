"""Code the notification tests hand to the service they start: it runs in that process."""
