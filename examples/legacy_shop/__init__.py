"""A small legacy shop: the monolith the migration guide (docs/migrating.md) strangles.

Plain FastAPI and SQLAlchemy on one SQLite file, the way a team's app looks before the split:
catalog, customers and orders in one process and one database, orders reading the catalog's
table directly. Nothing in it uses `core`: it is the code being retired, not platform code."""
