# klingflow: the two commands a fresh clone needs are `make demo` and `make test`.
# Both create .venv (Python 3.13, the Lambda runtime) and install what they need.

SHELL := /bin/bash
# The first python3.13 that runs (a pyenv shim on PATH may exist without 3.13 being selected).
PYTHON ?= $(shell for p in python3.13 $(HOME)/.pyenv/versions/3.13*/bin/python3.13; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
VENV := .venv
CHECKOV := .venv-checkov
BIN := $(abspath $(VENV)/bin)
# sam build looks for python3.13 on PATH: the venv provides it.
export PATH := $(BIN):$(PATH)
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

.PHONY: demo test test-fast lint typecheck pytest validate policy chaos bench scale build clean botocore-check

$(VENV)/.installed: pyproject.toml layers/klingflow/requirements.txt
	@test -n "$(PYTHON)" || { echo "Python 3.13 is required (python3.13 on PATH or pyenv 3.13.x)"; exit 1; }
	@echo "creating $(VENV) and installing klingflow's dependencies (a minute or two, once) ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/klingflow sandbox demo

# Every check at once, pytest first (the longest; its sandbox tests mostly wait on loopback I/O, so
# the others fit beside it). -k runs each to its end whatever fails; make then exits non-zero if any
# did, and --output-sync prints each check's output whole, when it ends.
test: $(VENV)/.installed $(CHECKOV)/.installed
	$(MAKE) --no-print-directory -k -j5 --output-sync=target pytest typecheck lint validate policy

# The pure and moto tiers (tests/tiers.py): no sandbox, no e2e, no fault suite; about 30 s on two
# cores. Only unit/ and integration/ can hold such tests; a worker more than cores fills the waits
# of the deadline tests.
test-fast: $(VENV)/.installed
	$(BIN)/pytest -n $(shell echo $$(( $$(nproc) + 1 ))) --dist loadfile -m "pure or moto" tests/unit tests/integration

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

# Two workers per core: most of a sandbox test's time is waiting (loopback I/O, an emulated
# provider's latency in real time), so a second worker's tests run in the first one's waits.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 2 )))
pytest: $(VENV)/.installed
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

validate: $(VENV)/.installed
	$(BIN)/sam validate --lint

# The fault suite's long form: hundreds of generated bodies and manifests, a storm of 240 jobs;
# it prints what it did (make test runs the short form).
chaos: $(VENV)/.installed
	KLINGFLOW_CHAOS=1 $(BIN)/pytest -p no:xdist -s -q --timeout 3600 tests/reliability

# Every hot path against its floor, side by side; prints the table and writes docs/performance.md
# (a benchmark: it reports; make test runs its --quick smoke so it cannot rot). About 10 minutes.
bench: $(VENV)/.installed
	$(BIN)/python -m klingflow_dev.bench

# DynamoDB writes and reads per partition key (table and each index), the jobs/s at which the
# hottest shared key meets DynamoDB's per-partition limit, Lambda concurrency and AWS cost per
# 1,000 jobs, from a sandbox run of every kind; writes docs/scale.md (a few minutes; make test
# runs its quick form, tests/integration/test_scale.py).
scale: $(VENV)/.installed
	$(BIN)/python -m klingflow_dev.scale

# checkov pins its own (older) boto3 and packaging: it gets a virtual environment of its own.
$(CHECKOV)/.installed:
	@test -n "$(PYTHON)" || { echo "Python 3.13 is required (python3.13 on PATH or pyenv 3.13.x)"; exit 1; }
	$(PYTHON) -m venv $(CHECKOV)
	$(CHECKOV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV)/bin/pip install --quiet "checkov>=3.2,<4"
	touch $@

# Every skipped check is justified in a comment beside its resource in template.yaml.
policy: $(CHECKOV)/.installed
	$(CHECKOV)/bin/checkov --file template.yaml --framework cloudformation --skip-download --compact --quiet

# The layers bundle botocore at one exact version (layers/klingflow/botocore.txt): asks PyPI
# whether a newer one exists and says how to take it (exit 1 when one does).
botocore-check: $(VENV)/.installed
	$(BIN)/python -m klingflow_dev.botocorecheck

build: $(VENV)/.installed
	$(BIN)/sam build

clean:
	rm -rf $(VENV) $(CHECKOV) .aws-sam .mypy_cache .ruff_cache .pytest_cache
