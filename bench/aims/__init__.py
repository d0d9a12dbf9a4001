"""`python -m bench.aims`: the table of issue 24's aims every benchmark in this run recorded."""
