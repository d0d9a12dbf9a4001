"""The driver service's tests: geohash units, the read model on SQLite and PostgreSQL, and the
service as a real process beside real Kafka, a token issuer and a stand-in user service
(procs/user_standin.py)."""
