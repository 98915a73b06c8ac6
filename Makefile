# Two entry points, each works on a fresh machine with only Python 3.10+ installed:
#   make demo       install into .venv, then export -> tile -> train -> predict -> evaluate on
#                   the synthetic demo region (led by validation ground, never trained on; its
#                   area error model), the glacier change over 2018-2020 with bias-corrected
#                   areas and their intervals, and 2020 scored against 2020's own ice
#   make test       install into .venv (with test extras), then run the whole test suite
#   make test-fast  the same without the tests marked slow (for development)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
WS     ?= workspace
# torch is pinned to the CPU build by constraints.txt; an unpinned torch pulls GBs of CUDA.
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test test-fast install install-dev clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e .

install-dev: $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"

demo: install
	$(BIN)/prep export --region demo --year 2018 --workspace $(WS)
	$(BIN)/prep tile --workspace $(WS) --export $(WS)/exports/demo-2018 --size 256 \
	    --block-tiles 2 --workers 2
	$(BIN)/train run --workspace $(WS) --tiles $(WS)/tiles/demo-2018 --preset tiny \
	    --epochs 15 --lr 1e-3 --name demo-tiny
	$(BIN)/train predict --workspace $(WS) --checkpoint $(WS)/runs/demo-tiny/best.pt \
	    --export $(WS)/exports/demo-2018
	$(BIN)/train evaluate --prediction $(WS)/predictions/demo-tiny/demo-2018
	$(BIN)/prep export --region demo --year 2019 --workspace $(WS)
	$(BIN)/prep export --region demo --year 2020 --workspace $(WS)
	$(BIN)/train change --workspace $(WS) --checkpoint $(WS)/runs/demo-tiny/best.pt \
	    --region demo --years 2018-2020
	# 2020 against 2020's own (synthetic) ice: held out in time, as a real application is.
	$(BIN)/train evaluate --prediction $(WS)/predictions/demo-tiny/demo-2020 \
	    --reference $(WS)/exports/demo-2020/truth_outlines.gpkg --name truth-2020

test: install-dev
	$(BIN)/python -m pytest -q -n 2 tests

test-fast: install-dev
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests

clean-demo:
	rm -rf $(WS)
