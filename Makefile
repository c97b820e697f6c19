# hw3: run, test, check and package the GPT-OSS-20B homework. `make` alone lists the targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help run test check zip report lint bench study clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP) ## execute the notebook headless: build/, figures/, report.md (HW3_DEVICE, HW3_NUM_THREADS)
	$(PY) -m hw3tools run

test: $(STAMP) ## unit tests and one end-to-end run of the notebook
	$(PY) -m pytest

check: $(STAMP) ## the grading rubric, rule by rule, for the last run
	$(PY) -m hw3tools check

zip: $(STAMP) ## check, then build/hw3_submission.zip for Moodle
	$(PY) -m hw3tools zip

report: $(STAMP) ## render the last run's report from its metrics again
	$(PY) -m hw3tools report

lint: $(STAMP) ## ruff over the module, tests, benchmark and notebook
	$(VENV)/bin/ruff check hw3_helpers.py hw3tools tests bench homework3.ipynb

bench: $(STAMP) ## speed and memory ratios: build/bench.json
	$(PY) bench/bench.py

study: $(STAMP) ## multi-seed study of variants and levers (resumes): study/
	$(PY) -m hw3tools study

clean: ## remove build outputs and caches (keeps the environment)
	rm -rf build .pytest_cache .ruff_cache __pycache__ tests/__pycache__ bench/__pycache__
