"""The auth service declares no event handlers: it consumes no events. What it publishes (an
outbox row per change, relayed to Kafka) is tested over HTTP, in test_http_rbac.py
(`test_events_reach_kafka_through_the_outbox`). The file is here so that every service's tests
have the same shape."""
