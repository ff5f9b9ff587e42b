# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements-pinned.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-pinned.txt
	$(PY) -m pip install -q -c requirements-pinned.txt -e '.[test,export,timm,hf,wandb]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gsimclr run --preset digits-quick

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) -m pip install -q -c requirements-pinned.txt -e '.[bench]'
	$(PY) benchmarks/throughput.py --out benchmarks/results

clean:
	rm -rf $(VENV) runs
