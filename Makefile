# hw3: a thin alias over `python -m hw3tools COMMAND`, which does the work (and is the route on Windows, without make).
# `make` alone lists the commands; their one list is COMMANDS in hw3tools/__main__.py, which this file reads.
# PYTHON picks the interpreter; TORCH=cpu installs PyTorch's CPU build on Linux; `make handout HANDOUT=path`.
PYTHON ?= python3
TORCH ?=
HW3 = $(PYTHON) -m hw3tools $(if $(TORCH),--torch $(TORCH))
COMMANDS := $(shell $(PYTHON) -m hw3tools --list)
ifeq ($(COMMANDS),)
$(error $(PYTHON) did not run; install Python 3.11 or newer and name it: make run PYTHON=python3.12)
endif

.DEFAULT_GOAL := help
.PHONY: help $(COMMANDS)

help:
	@$(PYTHON) -m hw3tools --help

$(COMMANDS):
	$(HW3) $@ $(if $(filter handout,$@),$(HANDOUT))
