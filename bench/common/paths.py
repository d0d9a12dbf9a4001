"""Where the repository is: the working directory and PYTHONPATH of the processes a benchmark
starts (`python -m services.auth`, uvicorn over `bench.gateway.upstream:app`, ...)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
