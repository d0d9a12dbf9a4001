"""`python -m bench.memory`: what each process of the system costs in memory (see __main__)."""
