# mixlab: `make reproduce` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= cpu
JOBS    ?=
SCHEDULER ?=

.PHONY: test reproduce train lab notebooks clean venv smoke

# Notebooks are tracked as jupytext .py files; their .ipynb twins (git-ignored) are built from them.
NOTEBOOKS := $(patsubst %.py,%.ipynb,$(wildcard notebooks/*.py))
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json

venv: $(STAMP) $(NOTEBOOKS)

# Create the virtualenv from the exact pins on first use (and again when the pins change).
$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

# A .py newer than its .ipynb (edited in an editor, or pulled) updates the .ipynb's inputs, keeping its outputs.
notebooks/%.ipynb: notebooks/%.py | $(STAMP)
	@$(BIN)/jupytext --quiet --sync $<

test: $(STAMP) $(NOTEBOOKS)
	$(BIN)/python -m pytest

# Every notebook of notebooks/manifest.yaml through papermill on PROFILE (cpu|gpu|paper|smoke), all at
# once (JOBS=N: N at once); their runs go to one Dask cluster: a local one of one worker per core (or GPU),
# or the scheduler SCHEDULER=tcp://HOST:PORT (default $MIXLAB_SCHEDULER). ONLY="mice tcc" runs just
# those, FORCE=1 re-runs unchanged ones.
# Only the runs: every run the notebooks declare on PROFILE, seed by seed, without executing them; each
# finished run's record lands in results/ (commit it: a later reproduce, here or elsewhere, reuses it).
train: $(STAMP)
	$(BIN)/python -m mixlab reproduce --train-only --profile $(PROFILE) $(if $(SCHEDULER),--scheduler $(SCHEDULER),) \
		$(if $(FORCE),--force,) $(foreach n,$(ONLY),--only $(n))

reproduce: $(STAMP)
	$(BIN)/python -m mixlab reproduce --profile $(PROFILE) $(if $(JOBS),--jobs $(JOBS),) \
		$(if $(SCHEDULER),--scheduler $(SCHEDULER),) $(if $(FORCE),--force,) $(foreach n,$(ONLY),--only $(n)) \
		$(if $(DRAW_ONLY),--draw-only,)

# JupyterLab on the repository root (README, results/, figures/ browsable), opening notebooks/, where a
# double-click opens a .py as a notebook (.jupyter/overrides.json). Root (containers, cloud notebooks)
# gets --allow-root. Remote or headless: make lab LAB_ARGS="--no-browser --port 8890", then
# ssh -L 8890:localhost:8890 HOST.
LAB_ARGS ?=
lab: $(STAMP) $(NOTEBOOKS) $(LAB_SETTINGS)
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

$(LAB_SETTINGS): .jupyter/overrides.json | $(STAMP)
	@mkdir -p $(dir $@)
	cp $< $@

# Save every notebook .py as the pinned JupyterLab + jupytext do (before committing a notebook edited elsewhere).
notebooks: $(STAMP)
	$(BIN)/python -m mixlab notebooks

clean:
	rm -rf runs .pytest_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
