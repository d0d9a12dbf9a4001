"""The benchmarks: one package per benchmark, each run as `python -m bench.<name>` (`make bench`
runs them all). Shared helpers are in `bench.common`. Numbers are printed and saved under
`.cache/`, never asserted in tests; docs/benchmarks.md has the tables.

    bus        the core bus against typed raw, FastStream, raw aiokafka and raw confluent-kafka
    scaling    the core consumer with 1 to 1,000 keys, with and without handler I/O
    horizontal consume throughput with 1, 2 and 3 consumer processes in one group
    outbox     outbox commits and relay against the bare drivers and a direct publish
    event_store
               event-store appends on PostgreSQL against raw asyncpg, same rows
    jwt        token verifications per second, by algorithm
    s2s        the service-to-service client against bare httpx and aiohttp
    login      logins per second against the bare Argon2 verify rate
    crud       BaseRouter and the user service against bare FastAPI apps
    locations  driver location updates over HTTP and Kafka into the nearby query
    saga       sagas of three steps over Kafka against the same steps as request-reply calls
    gateway    the gateway against calling the upstream directly and against nginx
    observability
               the bus and the gateway with tracing and metrics on against off
    memory     resident memory of every service, the gateway and a consumer; a soak
"""
