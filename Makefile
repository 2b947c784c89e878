# dlcourse — the two commands a learner needs are `make lab` and `make test` (see README.md).
# Everything is installed into .venv from pyproject.toml; a stamp file per extra skips the install when
# pyproject.toml has not changed, so a second `make lab` starts in seconds.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8888
# CI runs at smoke scale; the GPU workflow passes TEST_SCALE=full.
TEST_SCALE   ?= smoke
CELL_TIMEOUT ?= 300
# One torch thread per pytest worker (and per notebook kernel it starts): 2 workers on 2 cores, no oversubscription.
TEST_THREADS ?= 1

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: lab test sync check-sync lint grade progress verify bench clean help

help:
	@echo "make lab    - set up .venv (first run only) and open the course in JupyterLab"
	@echo "make test   - set up .venv with test extras and run the whole suite at smoke scale"
	@echo "make sync   - regenerate every .ipynb from its .py source and labs/ from solutions/"
	@echo "make progress - your labs: not started / in progress / passing, and what to do next"
	@echo "make grade LAB=solutions/lab01_training_loop.py SUBMISSIONS=dir OUT=dir - autograde a folder"
	@echo "make verify [SCALE=small] [ONLY='03 07'] [JOBS=1] - run notebooks + solutions here, write a report"
	@echo "make bench  - run the benchmark scripts and print their tables"

$(BIN)/python:
	@echo "== Creating $(VENV) with $(PYTHON) (first run only)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=23.2"

# One stamp per set of extras; each depends on pyproject.toml, so editing dependencies reinstalls.
# The first install is long (PyTorch alone is GBs): say so, with the time measured by benchmarks/first_install.sh,
# and let pip show what it downloads and installs.
INSTALL_NOTE = $(PYTHON) -c 'import json; d = json.load(open("benchmarks/first_install.json")); \
	m, c, g = round(d["seconds"] / 60), d["cores"], d["venv_mb"] / 1024; \
	local = " with PyTorch'"'"'s wheels already on disk" if d.get("local_wheels") else ""; \
	print(f"   A first install took about {m} min on a {c}-core machine{local} ({g:.1f} GB into .venv; \
	benchmarks/first_install.sh measures it). Downloading PyTorch (GBs) adds what your connection needs. \
	pip shows its progress below.")' 2>/dev/null || true
KERNEL = $(BIN)/python -m ipykernel install --sys-prefix --name dlcourse --display-name "Python (dlcourse)"

$(VENV)/.installed-lab: pyproject.toml | $(BIN)/python
	@echo "== Installing PyTorch, JupyterLab and the course package into $(VENV) - again only when pyproject.toml changes"
	@$(INSTALL_NOTE)
	@start=$$(date +%s) && $(BIN)/python -m pip install -e ".[lab]" && \
		echo "== Installed in $$(( $$(date +%s) - start )) s; registering the \"Python (dlcourse)\" kernel"
	@$(KERNEL) >/dev/null
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "== Installing the course with its lab and test extras into $(VENV) - again only when pyproject.toml changes"
	@$(INSTALL_NOTE)
	@start=$$(date +%s) && $(BIN)/python -m pip install -e ".[lab,test]" && \
		echo "== Installed in $$(( $$(date +%s) - start )) s; registering the \"Python (dlcourse)\" kernel"
	@$(KERNEL) >/dev/null
	@touch $@ $(VENV)/.installed-lab

lab: $(VENV)/.installed-lab
	$(BIN)/dlcourse lab --port $(PORT)

sync: $(VENV)/.installed-lab
	$(BIN)/dlcourse sync

# CI gate: regenerating must not change any committed file.
check-sync: $(VENV)/.installed-test
	$(BIN)/dlcourse sync --check

lint: $(VENV)/.installed-test
	$(BIN)/dlcourse lint solutions

test: $(VENV)/.installed-test
	$(BIN)/dlcourse env
	$(BIN)/dlcourse sync --check
	$(BIN)/dlcourse lint solutions
	DLCOURSE_SCALE=$(TEST_SCALE) OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -n auto --dist loadscope \
		--nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=$(CELL_TIMEOUT) \
		tests notebooks solutions

progress: $(VENV)/.installed-lab
	$(BIN)/dlcourse progress

grade: $(VENV)/.installed-lab
	$(BIN)/dlcourse grade $(LAB) $(SUBMISSIONS) --out $(OUT)

# Run every notebook and lab solution at SCALE in this environment; the report in benchmarks/reports/ feeds the
# README's minutes (`make sync` writes them in). Elsewhere (Colab, a GPU box) run `dlcourse verify` directly.
JOBS ?= 1
verify: $(VENV)/.installed-lab
	$(BIN)/dlcourse verify $(if $(SCALE),--scale $(SCALE)) $(if $(ONLY),--only $(ONLY)) --jobs $(JOBS)

bench: $(VENV)/.installed-lab
	@for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
