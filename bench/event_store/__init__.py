"""Event-store appends on PostgreSQL against raw asyncpg inserting the same rows
(`python -m bench.event_store`)."""
