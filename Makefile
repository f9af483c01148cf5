# Set-up and the two jobs of a fresh machine: `make demo` and `make test`.
# Everything installs into ./.venv. torch is pinned to a CPU build by default;
# override with `make test TORCH_VERSION=...` (or TORCH_SPEC for a full pip spec).

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_SPEC ?= torch==$(TORCH_VERSION)
BIN := $(VENV)/bin
STAMP := $(VENV)/.redrep-installed

.PHONY: venv demo test lint bench readme-numbers clean

venv: $(STAMP)

# setup.py and the C sources: the compiled fast pass of the accuracies is rebuilt when they change
$(STAMP): pyproject.toml Makefile setup.py src/redrep/core/_fastpass.c src/redrep/core/_fastpass_body.h
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[train,slurm,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/redrep demo --out demo_output

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts examples setup.py
	$(BIN)/ruff format --check src tests benchmarks scripts examples setup.py
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_analyze.py

# Every number the README quotes, from the commands it shows (scripts/readme_numbers.py): runs them all (the demo,
# its dynamics, the weight-decay comparison, the other tasks, the benchmarks, the tests; long), keeps their numbers
# in docs/readme_numbers.json and writes them into README.md. STAGES=quick,demo runs some only.
readme-numbers: $(STAMP)
	$(BIN)/python scripts/readme_numbers.py $(if $(STAGES),--stages $(STAGES))

clean:
	rm -rf $(VENV) demo_output readme_numbers_work
