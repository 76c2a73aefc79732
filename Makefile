# The two commands: `make run` starts the whole system, `make test` runs every test.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: wrk run scale cluster test bootstrap month-end month-end-faults bench bench-bus bench-comparison bench-decisions bench-payments bench-reporting bench-privacy bench-scaling bench-events

bootstrap:
	@./scripts/bootstrap.sh

# the HTTP load generator of the benchmarks (Debian's wrk), installed when missing
wrk:
	@./scripts/install_wrk.sh

run: bootstrap
	@.venv/bin/python scripts/run_all.py

# N instances of every service behind a local load balancer on the usual ports (`N=3 make scale`; default 2)
scale: bootstrap
	@SCALE=$(or $(N),2) .venv/bin/python scripts/run_all.py

# the system on a three-node RabbitMQ cluster of its own (new nodes beside the machine's; removed at the end)
cluster: bootstrap
	@.venv/bin/python scripts/cluster.py

test: bootstrap
	@./scripts/test.sh

# issue 19 item 5's three ratios (single POST /charges with the whole system, a streamed 100,000-line CSV, a settlement
# of 1,000,000 charges), each against its raw baseline in the same run (bench/speed.py; ARGS="--quick" for a smoke run)
bench: bootstrap wrk
	@.venv/bin/python bench/speed.py $(ARGS)

# the bus against raw aio-pika (bench/bus_pipeline.py)
bench-bus: bootstrap
	@.venv/bin/python bench/bus_pipeline.py

bench-comparison: bootstrap wrk
	@.venv/bin/python bench/comparison.py

bench-decisions: bootstrap
	@.venv/bin/python bench/decisions.py

bench-payments: bootstrap wrk
	@.venv/bin/python bench/payments.py

bench-reporting: bootstrap
	@.venv/bin/python bench/reporting.py $(ARGS)

bench-privacy: bootstrap
	@.venv/bin/python bench/privacy_guard.py $(ARGS)

# one and then two instances of the reporting service draining the same queue of charge events (bench/scaling.py)
bench-scaling: bootstrap
	@.venv/bin/python bench/scaling.py $(ARGS)

bench-events: bootstrap
	@.venv/bin/python bench/charge_events.py $(ARGS)

# a county's month end to end through the public APIs and the bus (bench/month_end.py): `make month-end`,
# `make month-end ARGS="--scale 0.05"`, with faults on servers of its own: `make month-end ARGS=--faults` or
# `FAULTS=1 make month-end`
month-end: bootstrap
	@.venv/bin/python bench/month_end.py $(ARGS)

# the same month under faults (GNU make takes no `make month-end --faults`: its options are its own)
month-end-faults: bootstrap
	@.venv/bin/python bench/month_end.py --faults $(ARGS)
