"""The catalog's code in the extracted service: what a team writes into the service that
`python -m core create-service catalog` generated (docs/migrating.md, step 2).

These files are copied over `services/catalog/` as they are (so they import
`services.catalog.*`): the shop's products table and contract (`models`, `schemas`, `rules`,
`routers`), the events it publishes (`events`), the app (`main`), and the backfill from the
shop's database (`backfill`). tests/e2e/test_strangler.py generates the service, copies these
in, makes the migration and runs the move end to end."""
