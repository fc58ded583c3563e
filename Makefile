# mixlab: `make reproduce` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= cpu
JOBS    ?= 2

.PHONY: test reproduce lab notebooks clean venv smoke

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

# Every notebook of notebooks/manifest.yaml through papermill on PROFILE (cpu|gpu|paper|smoke), JOBS at
# once (default 2: the cpu profile's runs use one thread each); ONLY="mice tcc" runs just those, FORCE=1
# re-runs unchanged ones.
reproduce: $(STAMP)
	$(BIN)/python -m mixlab reproduce --profile $(PROFILE) --jobs $(JOBS) $(if $(FORCE),--force,) $(foreach n,$(ONLY),--only $(n))

# JupyterLab on the repository root (README, results/, figures/ browsable), opening notebooks/.
# Remote or headless: make lab LAB_ARGS="--no-browser --port 8890", then ssh -L 8890:localhost:8890 HOST.
LAB_ARGS ?=
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks $(LAB_ARGS)

# Save every notebook pair as the pinned JupyterLab + jupytext do, outputs stripped (before committing).
notebooks: $(STAMP)
	$(BIN)/python -m mixlab notebooks

clean:
	rm -rf runs .pytest_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
