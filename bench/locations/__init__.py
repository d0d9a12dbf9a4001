"""Driver location updates into the nearby query (`python -m bench.locations`)."""
