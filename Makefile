# The two commands a newcomer needs: `make up` and `make test`. Everything they need is
# installed by scripts/bootstrap.sh (idempotent; fast when nothing is missing).
UV ?= python3 -m uv
RUN = $(UV) run --frozen

.PHONY: help bootstrap up test test-unit lint bench mutate images clean

help:
	@echo "make up     - start a local Kafka and the system (Ctrl-C stops everything); OBS=1: and Prometheus"
	@echo "make test   - install what the tests need, then run them against real servers"
	@echo "make lint   - ruff on everything, mypy on core/, services/ and gateway/"
	@echo "make bench  - bus vs FastStream/aiokafka/confluent-kafka; outbox; event store; JWT; service calls; login; CRUD vs bare FastAPI; driver locations; gateway vs nginx; tracing and metrics on vs off"
	@echo "make images - build every service's and the gateway's image (kfm/<name>:dev), start one to its health check"
	@echo "make mutate - mutation testing of the data-and-order modules against tests/unit"

bootstrap:
	@bash scripts/bootstrap.sh

# make up DB=postgres: a local PostgreSQL, one database per service; OBS=1: Prometheus too,
# scraping every process (deploy/observability/); UP_ARGS for more
# (python -m devinfra.stack --help), e.g. UP_ARGS="--base-port 9000 --duration 60".
DB ?= sqlite
OBS ?=
# make up MODE=monolith: every service in one process (docs/monolith.md); BUS=memory: no Kafka
MODE ?= processes
BUS ?= kafka
up: bootstrap
	$(RUN) python -m devinfra.stack --db $(DB) $(if $(OBS),--observability) --mode $(MODE) \
		--bus $(BUS) $(UP_ARGS)

test: bootstrap
	@bash scripts/test.sh $(PYTEST_ARGS)

test-unit: bootstrap
	@bash scripts/test.sh tests/unit $(PYTEST_ARGS)

lint: bootstrap
	$(RUN) ruff check .
	$(RUN) mypy core services gateway
	$(RUN) python -m core events check
	$(RUN) python -m core events docs

# The benchmarks' own packages (FastStream, aiokafka, granian) are in the `bench` dependency
# group: installed here, not by bootstrap, so `make up` and `make test` never need them.
BENCH = $(RUN) --group bench python -m
bench: bootstrap
	$(BENCH) bench.aims --clear
	$(BENCH) bench.bus $(BENCH_ARGS)
	$(BENCH) bench.scaling
	$(BENCH) bench.horizontal
	$(BENCH) bench.outbox
	$(BENCH) bench.event_store
	$(BENCH) bench.jwt
	$(BENCH) bench.s2s
	$(BENCH) bench.login
	$(BENCH) bench.crud --postgres
	$(BENCH) bench.locations
	$(BENCH) bench.saga
	$(BENCH) bench.gateway
	$(BENCH) bench.observability
	$(BENCH) bench.memory
	$(BENCH) bench.aims

# Mutation testing (mutmut; config in pyproject.toml, equivalents in mutation/). Two workers at
# the lowest priority: other people's timing-sensitive tests share the machine. Always from
# scratch: mutmut keeps a survivor's verdict even after a new test would kill it.
# MUTANTS narrows the run to mutant names matching a glob, e.g. MUTANTS='core.security.*'.
MUTANTS ?=
mutate: bootstrap
	rm -rf mutants
	nice -n 19 $(RUN) mutmut run --max-children 2 $(MUTANTS)
	$(RUN) python scripts/mutate_report.py $(MUTATE_ARGS)

# The images of every service and the gateway from the one Dockerfile (scripts/images.sh: starts
# the engine if none runs, makes the base from Debian's packages once). IMAGES_ARGS for more,
# e.g. IMAGES_ARGS="--only user --tag v1"; BASE_IMAGE=python:3.11-slim where a registry answers.
images: bootstrap
	@bash scripts/images.sh $(IMAGES_ARGS)

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .cache mutants
