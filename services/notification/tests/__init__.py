"""The notification service's tests: handlers and delivery in one process over SQLite and
PostgreSQL, and the service as a real process on Kafka."""
