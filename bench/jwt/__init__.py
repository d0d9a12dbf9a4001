"""JWT verifications per second, by algorithm (`python -m bench.jwt`)."""
