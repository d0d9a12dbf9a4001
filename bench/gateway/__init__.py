"""The gateway against the upstream directly and nginx (`python -m bench.gateway`)."""
