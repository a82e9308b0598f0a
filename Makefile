# Two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export KERAS_BACKEND := torch
export NO_MKDOCS_2_WARNING := 1

.PHONY: venv demo test browser lint format docs wheel bench clean

venv: $(VENV)/.installed

# torch==2.13.0 first: it is the CPU build; the extras' ranges accept it and add nothing more.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all]'
	touch $@

# runs/demo is the demo's own folder: a second `make demo` replaces its report files
demo: venv
	$(VENV)/bin/normlab demo --overwrite

# pytest exits non-zero on a failure and with 5 when it collects no test: both fail `make test`.
test: venv browser
	$(PY) -m pytest

browser:
	@bash tools/ensure-chromium.sh

lint: venv
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/ruff format --check src tests bench tools
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff format src tests bench tools
	$(VENV)/bin/ruff check --fix src tests bench tools

docs: venv
	$(VENV)/bin/mkdocs build --strict --site-dir site

# A wheel and an sdist, installed (not editable) into a fresh environment and smoke-tested.
# The fresh environment reads its dependencies from $(VENV) through a .pth file instead of a
# second copy of them (2.8 GB with torch: CI's disk ran out installing it); --ignore-installed
# keeps pip from touching $(VENV)'s editable normlab. The smoke test checks that the wheel's
# declared requirements, its [all] extra included, are met, and removes the environment.
SITE = lib/python$(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])')/site-packages
wheel: venv
	rm -rf dist build/wheel-env
	$(PY) -m build --outdir dist . >/dev/null
	python3 -m venv --without-pip build/wheel-env
	echo "$(abspath $(VENV))/$(SITE)" > build/wheel-env/$(SITE)/normlab-deps.pth
	$(PY) -m pip --python build/wheel-env/bin/python install -q --no-deps --ignore-installed \
		"$$(ls dist/*.whl)"
	cd build && bash ../tools/smoke-wheel.sh wheel-env
	rm -rf build/wheel-env

bench: venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache site dist build
