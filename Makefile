# redpo: every user-facing command. `make setup` once, then `make test-fast` while you work, `make test` before you
# stop (CI runs it), and `make reproduce PROFILE=cpu`.
PYTHON ?= .venv/bin/python
PROFILE ?= cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
REDPO_DATA_MIRROR ?= ../shared/data
MIRROR ?= $(REDPO_DATA_MIRROR)
KERNEL ?= redpo
# Every other package at the version `make lock` last wrote (constraints.txt, for the Python it names), so that a run
# spanning machines and sessions trains and scores with the same libraries as CI. `make setup CONSTRAINTS=` resolves
# freely instead (say, beside a CUDA torch whose dependencies want other versions).
CONSTRAINTS ?= constraints.txt
# dev and docs are always installed (the tests build the documentation site); EXTRAS adds optional extras of
# pyproject.toml, comma-separated: `make setup EXTRAS=ray` (executor: ray, docs/cluster.md).
EXTRAS ?=
comma := ,
PIP_EXTRAS := dev,docs$(if $(EXTRAS),$(comma)$(EXTRAS))
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
# One stamp per set of extras, and per whether the constraints applied (so dropping them, or bringing them back,
# reinstalls rather than keeping the other kind of environment without a word).
STAMP := .venv/.redpo-installed-$(subst $(comma),-,$(PIP_EXTRAS))$(if $(CONSTRAINTS),-locked,-free)

# Pass --mirror only when the mirror exists; otherwise `redpo data --fetch` downloads the pinned files.
MIRROR_ARG := $(if $(wildcard $(MIRROR)),--mirror $(MIRROR))

.PHONY: setup lock data test test-fast reproduce figures lab browser strip lint docs docs-serve clean

# A non-default PYTHON (e.g. a conda env from environment.yml) is used as it is: no .venv is built.
# `redpo engine --build` compiles llama-server from the pinned llama.cpp source once per machine (about 7.5 min on
# 2 idle cores) into REDPO_CACHE; every later setup finds it and builds nothing.
ifeq ($(PYTHON),.venv/bin/python)
setup: $(STAMP)
	$(PYTHON) -m redpo engine --build
else
setup:
	@echo "PYTHON=$(PYTHON): using that environment as it is (no .venv)"
	$(PYTHON) -m redpo engine --build
endif

# torch goes in first, on its own, so resolving the rest never pulls a CUDA build; the stamp makes a second `make
# setup` a no-op until pyproject.toml or constraints.txt changes.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/python -m pip install --quiet --quiet --upgrade pip
	.venv/bin/python -m pip install --quiet --quiet $(TORCH_PIP_ARGS) '$(TORCH_SPEC)'
	.venv/bin/python -m pip install --quiet --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[$(PIP_EXTRAS)]'
	.venv/bin/python -m ipykernel install --user --name $(KERNEL) --display-name "$(KERNEL)"
	touch $@

# Rewrite constraints.txt from a .venv built by `rm -rf .venv && make setup EXTRAS=ray CONSTRAINTS=`: every extra,
# the newest releases pyproject.toml allows, nothing installed by hand (the stamp below proves how it was built).
# torch is left out (TORCH_SPEC pins it); each line carries this Python's version as a marker, so another Python
# resolves freely rather than failing on a release that has no wheel for it. A package installed from a URL or a
# path cannot be a constraint: the lock stops rather than write it.
LOCK_FROM := .venv/.redpo-installed-dev-docs-ray-free
lock:
	@test -e $(LOCK_FROM) || { echo "make lock: no $(LOCK_FROM); first: rm -rf .venv && make setup EXTRAS=ray CONSTRAINTS="; exit 2; }
	@! .venv/bin/python -m pip freeze --exclude-editable | grep ' @ ' || { echo "make lock: the packages above come from a URL or a path; reinstall them from the index"; exit 2; }
	{ echo "# Written by \`make lock\` (see the Makefile): every package of \`make setup EXTRAS=ray\` but torch."; \
	  .venv/bin/python -m pip freeze --exclude-editable | grep -v -i -E '^torch==' | \
	  sed "s/\$$/; python_version == \"$$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')\"/"; \
	} > constraints.txt

data: setup
	$(PYTHON) -m redpo data --fetch $(MIRROR_ARG)

# The full suite: lint, the import contract, then every test (notebooks, training, packaged models included).
test: data lint
	$(PYTHON) -m pytest

# Feedback in about a minute: everything but the tests marked slow (notebook runs, training, packaged models).
test-fast: data lint
	$(PYTHON) -m pytest -m "not slow"

reproduce: setup
	$(PYTHON) -m redpo run --profile $(PROFILE)

# Figures, tables and claims.md from results/$(PROFILE)/metrics only: no model is loaded, it takes seconds.
figures: setup
	$(PYTHON) -m redpo figures --profile $(PROFILE)

# JupyterLab on notebooks/ with the `redpo` kernel of this environment, registered again first (another checkout's
# setup, or a conda env, may have left `redpo` pointing elsewhere). Listens on 127.0.0.1 with a token; see
# docs/jupyterlab.md. LAB_ARGS adds JupyterLab options (e.g. LAB_ARGS=--no-browser).
LAB_ARGS ?=
lab: setup
	$(PYTHON) -m ipykernel install --user --name $(KERNEL) --display-name "$(KERNEL)"
	$(PYTHON) -m jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# Debian's headless Chromium and its driver, for the JupyterLab browser test (tests/test_jupyterlab.py skips
# without them). Needs root and Debian's package mirrors; CI's .ci/run calls it, `make setup` does not.
browser:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver

strip: setup
	$(PYTHON) -m nbstripout --keep-id $(NOTEBOOKS)

# ruff, and the layer contract of pyproject.toml (lint-imports).
lint: setup
	$(PYTHON) -m ruff check .
	$(dir $(PYTHON))lint-imports

# The documentation site (mkdocs.yml): offline and strict, so a broken link, a missing page or a failing include
# fails the build. It reads results/ and redpo/config.py where they are; site/ is gitignored.
DOCS_ENV := NO_MKDOCS_2_WARNING=1
docs: setup
	$(DOCS_ENV) $(PYTHON) -m mkdocs build --strict --site-dir site

docs-serve: setup
	$(DOCS_ENV) $(PYTHON) -m mkdocs serve --strict --dev-addr 127.0.0.1:8000

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis .import_linter_cache results/smoke site
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
