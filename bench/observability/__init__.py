"""What tracing and metrics cost the bus and the gateway, on against off in one run
(`python -m bench.observability`)."""
