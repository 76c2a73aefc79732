# The two commands: `make run` starts the whole system, `make test` runs every test.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: run test bootstrap bench bench-comparison bench-decisions bench-payments bench-reporting bench-privacy bench-events

bootstrap:
	@./scripts/bootstrap.sh

run: bootstrap
	@.venv/bin/python scripts/run_all.py

test: bootstrap
	@./scripts/test.sh

bench: bootstrap
	@.venv/bin/python bench/bus_pipeline.py

bench-comparison: bootstrap
	@.venv/bin/python bench/comparison.py

bench-decisions: bootstrap
	@.venv/bin/python bench/decisions.py

bench-payments: bootstrap
	@.venv/bin/python bench/payments.py

bench-reporting: bootstrap
	@.venv/bin/python bench/reporting.py $(ARGS)

bench-privacy: bootstrap
	@.venv/bin/python bench/privacy_guard.py $(ARGS)

bench-events: bootstrap
	@.venv/bin/python bench/charge_events.py $(ARGS)
