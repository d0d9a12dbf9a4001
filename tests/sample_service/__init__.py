"""A test-only service written the way real services are: its own base, migrations, schemas,
service and router. The CRUD and migration tests drive it."""
