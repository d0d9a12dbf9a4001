"""Helpers every benchmark shares: rates and percentiles, the payload, the broker's JVM."""
