# hw3: a thin alias over `python -m hw3tools COMMAND`, which does the work (and is the route on Windows, without make).
# `make` alone lists the targets. PYTHON picks the interpreter; TORCH=cpu installs PyTorch's CPU build on Linux.
PYTHON ?= python3
TORCH ?=
HW3 = $(PYTHON) -m hw3tools $(if $(TORCH),--torch $(TORCH))

.DEFAULT_GOAL := help
.PHONY: help setup run test check zip lint bench study clean pins handout

help: ## list the targets
	@$(PYTHON) -m hw3tools --help

handout: ## regenerate what derives from a new handout: make handout HANDOUT=path/to/handout.ipynb
	$(HW3) handout $(HANDOUT)

setup run test check zip lint bench study clean pins:
	$(HW3) $@
