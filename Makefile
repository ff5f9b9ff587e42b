# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test docs install bench evidence evidence-smoke evidence-list evidence-cpu evidence-cpu-status evidence-cpu-save clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements-pinned.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-pinned.txt
	$(PY) -m pip install -q -c requirements-pinned.txt -e '.[test,docs,export,timm,hf,wandb]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gsimclr run --preset digits-quick

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# The documentation site (mkdocs.yml, docs/): strict, so a warning or a broken link fails. The command-line
# reference is generated: `$(PY) -m gsimclr.docs_cli` rewrites docs/reference/cli.md after an option changes.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(STAMP)
	$(PY) -m pip install -q -c requirements-pinned.txt -e '.[bench]'
	$(PY) benchmarks/throughput.py --out benchmarks/results

# GPU evidence (issues 12 and 17, scripts/evidence.py): every unfinished part in the lease order, each skipped
# once its JSON exists; EVIDENCE_ARGS e.g. '--stage tta-gsimclr' or '--budget-s 540'. On the GPU machine (no
# registry, no venv) run python3 scripts/evidence.py directly: see "GPU evidence" in benchmarks/README.md.
evidence: $(STAMP)
	$(PY) -m pip install -q -c requirements-pinned.txt -e '.[bench]'
	$(PY) scripts/evidence.py $(EVIDENCE_ARGS)

# The lease order with each part's state and measured (or compile-aware) estimate.
evidence-list: $(STAMP)
	$(PY) scripts/evidence.py --list

# A lease simulated on the CPU, into a temporary folder (tests/test_evidence.py runs it too): a call cut by
# SIGKILL, its export imported into a fresh copy of the checkout and resumed there to the uncut run's
# result, that call running every stage at tiny sizes.
evidence-smoke: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) scripts/evidence.py --simulate-lease "$$(mktemp -d -t gsimclr-lease-XXXXXX)" --full

# The CPU lane (issue 24; benchmarks/README.md, "The CPU lane"): the paper's CIFAR-10 table on this CPU, in the
# background at the lowest priority, carried across working periods (state in ~/.cache/gsimclr/evidence, or
# $$GSIMCLR_LANE_HOME; committed with evidence-cpu-save). LANE_ARGS e.g. '--budget-h 2.5 --cifar10 DIR'.
LANE_HOME = $${GSIMCLR_LANE_HOME:-$$HOME/.cache/gsimclr/evidence}
evidence-cpu: $(STAMP)
	mkdir -p $(LANE_HOME) && nohup nice -n 19 $(PY) scripts/evidence.py --lane cpu $(LANE_ARGS) >> $(LANE_HOME)/lane.out 2>&1 &
	@echo "CPU lane started at nice 19; log: $(LANE_HOME)/lane.out; progress: make evidence-cpu-status"

evidence-cpu-status: $(STAMP)
	$(PY) scripts/evidence.py --lane cpu --status

# Before a working period stops: the lane's small state and its finished results, ready to commit.
evidence-cpu-save: $(STAMP)
	$(PY) scripts/evidence.py --lane cpu --save-state
	$(PY) scripts/evidence.py --report

clean:
	rm -rf $(VENV) runs site .cache build dist
