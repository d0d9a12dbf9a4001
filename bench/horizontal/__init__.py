"""`python -m bench.horizontal`: consume throughput with 1, 2 and 3 consumer processes."""
