# LALIC Workbench. Two commands for a new user: `make figures` and `make test`.
# Each creates .venv on first use (python3 -m venv .venv; pip install -e ".[dev]").
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: figures test test-slow test-browser lab lint venv warmup notebooks clean-venv

# Installing also compiles numba's BiWKV CPU kernels once (announced; about 40 s on 2 idle
# cores, cached on disk), so that the first notebook cell does not wait for them.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m lalic_core.warmup
	@touch $(STAMP)

venv: $(STAMP)

## make warmup: compile (or load) the numba BiWKV CPU kernels; instant when already cached
warmup: $(STAMP)
	$(PY) -m lalic_core.warmup

## make figures: regenerate every figure in figures/ (headless)
figures: $(STAMP)
	MPLBACKEND=Agg $(PY) -m lalic_core.figures

## make figures-full: the full-size measurements (ERF of every row on all 24 Kodak images at
## 512x768, latent correlation on all 24) and then every figure; rows already in figures/data
## with the same inputs (model, weights hash, images) are reused, so a newly trained model
## costs only its own rows. See README "Figures" for the run time.
.PHONY: figures-full
figures-full: $(STAMP)
	MPLBACKEND=Agg $(PY) -m lalic_core.figures --full

## make test: the default pytest run (< 10 minutes on 2 CPU cores)
test: $(STAMP)
	$(PY) -m pytest -q

## make test-slow: the tests marked slow (long accuracy sweeps, full-size models)
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

## make test-browser: JupyterLab driven in headless Chromium (needs chromium + playwright)
test-browser: $(STAMP)
	bash scripts/ci_browser_setup.sh
	$(PY) -m pytest -q -m browser tests/test_browser.py

## make lab: JupyterLab on notebooks/ with the widgets front-end (kernels compiled first)
lab: warmup
	$(VENV)/bin/jupyter lab notebooks/

## make notebooks: re-run the notebooks in FAST mode and commit-ready (outputs kept, volatile
## metadata stripped): what notebooks/*.ipynb hold
notebooks: warmup
	$(PY) -m lalic_core.notebooks notebooks/*.ipynb

lint: $(STAMP)
	$(VENV)/bin/ruff check lalic_core tests benchmarks scripts

clean-venv:
	rm -rf $(VENV)
