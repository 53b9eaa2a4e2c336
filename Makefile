# The two commands of the README's quick start: `make demo` and `make test`.
# Each bootstraps .venv idempotently (see scripts/bootstrap_venv.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=

.PHONY: venv demo test lint bench figures clean

venv:
	@VENV=$(VENV) ./scripts/bootstrap_venv.sh

demo: venv
	$(VENV)/bin/paranasal-ssl demo --out $(DEMO_OUT)

test: venv
	$(VENV)/bin/ruff check ParanasalSSL Testing benchmarks scripts
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check ParanasalSSL Testing benchmarks scripts

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
