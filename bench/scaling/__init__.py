"""How the core consumer scales with keys and handler I/O (`python -m bench.scaling`)."""
