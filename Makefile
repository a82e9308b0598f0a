# Two commands on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export KERAS_BACKEND := torch

.PHONY: venv demo test bench clean

venv: $(VENV)/.installed

# torch==2.13.0 first: it is the CPU build; the extras' ranges accept it and add nothing more.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all]'
	touch $@

demo: venv
	$(VENV)/bin/normlab demo

test: venv
	$(PY) -m pytest

bench: venv
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
