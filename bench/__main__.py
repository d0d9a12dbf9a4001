"""`python -m bench`: lists the benchmarks (each runs as `python -m bench.<name>`)."""

import bench

print(bench.__doc__)
