"""Logins per second against the bare Argon2 verify rate (`python -m bench.login`)."""
