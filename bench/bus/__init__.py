"""The core bus against typed raw, FastStream and the raw clients (`python -m bench.bus`)."""
