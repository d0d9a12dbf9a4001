"""The transactional outbox against the bare drivers (`python -m bench.outbox`)."""
