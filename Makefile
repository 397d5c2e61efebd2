# psremote: every set-up step the tests and the demo need lives here, so a fresh machine
# of this kind needs nothing but `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP_PKGS := -r testserver/requirements.txt
export PSREMOTE_PYTHON := $(abspath $(VPY))

.PHONY: venv test demo fmt-check clippy rust-test py-test no-default-features

$(VENV)/.ok: testserver/requirements.txt testserver/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check $(PIP_PKGS)
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps -e testserver
	touch $@

venv: $(VENV)/.ok
