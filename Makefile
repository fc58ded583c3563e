# mixlab: `make reproduce` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= cpu

.PHONY: test reproduce lab clean venv smoke

venv: $(STAMP)

# Create the virtualenv from the exact pins on first use (and again when the pins change).
$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

# Every notebook of notebooks/manifest.yaml through papermill on PROFILE (cpu|gpu|paper|smoke).
reproduce: $(STAMP)
	$(BIN)/python -m mixlab reproduce --profile $(PROFILE) $(if $(FORCE),--force,)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
