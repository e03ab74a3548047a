# The course's commands. Run `make book` to build the rendered book, `make test` for
# everything CI checks. Both create .venv (Python 3.11) on first use and reuse it later.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# What the tests read (scripts/build_book.py writes them; pytest never builds anything itself).
NB_REPORT := _build/notebooks.json
# CI (CI=true) never skips the browser checks nor the sandboxed grading.
REQUIRE := $(if $(filter true 1 yes,$(CI)),--require-browser --require-sandbox)
PYTEST  := INITLAB_PROGRESS=0 $(PY) -m pytest $(REQUIRE) $(PYTEST_ARGS)

.PHONY: help setup exercises notebooks book test lab grade clean

help:
	@echo "make book   build the rendered book into _build/html (executes every notebook)"
	@echo "make test   everything CI checks: unit tests and doctests, exercises and grading, every notebook, the book build and the site checks"
	@echo "make notebooks  execute every notebook under chapters/ into the book's cache; report: $(NB_REPORT) (pytest -m notebooks reads it)"
	@echo "make exercises  student notebooks and autograder bundles from exercises/*.ipynb (commit the notebooks)"
	@echo "make lab    JupyterLab in the course's environment"
	@echo "make grade  CHAPTER=03_xavier SUBMISSIONS='dir/*.ipynb' [JOBS=2] -> grades.csv"

$(PY):
	@if [ -z "$(PYTHON)" ]; then echo "error: no python3.11 or python3 on PATH; install Python 3.11" >&2; exit 1; fi
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || \
	  { echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); the course needs 3.11 (make PYTHON=/path/to/python3.11)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "error: could not create $(VENV) with $(PYTHON)" >&2; exit 1; }

$(STAMP): requirements.txt pyproject.toml | $(PY)
	@echo "Installing the pinned requirements into $(VENV) ..."
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt || \
	  { echo "error: 'pip install -r requirements.txt' failed (see pip's message above)" >&2; exit 1; }
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e . || \
	  { echo "error: 'pip install -e .' (the initlab library) failed" >&2; exit 1; }
	@# Microsoft's mup 1.0.0, for the unit tests that cross-check initlab.mup against it. Its
	@# declared dependencies pull a torchvision that cannot import beside the CPU torch, and
	@# mup itself needs none of them beyond torch and numpy: install it alone.
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps mup==1.0.0 || \
	  { echo "error: 'pip install --no-deps mup==1.0.0' failed" >&2; exit 1; }
	@touch $@

setup: $(STAMP)

exercises: setup
	@$(PY) -m initlab.grading build

# The book needs the student notebooks, not a check of the solutions (make exercises and make
# test grade those): --no-run-tests makes the six masters take ~6 s instead of ~40 s.
book: setup
	@$(PY) -m initlab.grading build --no-run-tests
	@INITLAB_PROGRESS=0 $(PY) scripts/build_book.py

# Every notebook under chapters/ (the book's pages and the student exercise notebooks), in
# parallel, into the book's notebook cache; per notebook: status, seconds, traceback and the hash
# of the file executed, in $(NB_REPORT). The notebook tests (pytest -m notebooks) read it.
notebooks: setup
	@INITLAB_PROGRESS=0 $(PY) scripts/build_book.py --execute-only $(NB_REPORT) --chapters

# No `exercises` prerequisite: the tests build the masters in a scratch folder and fail if a
# committed student notebook differs from that build (run `make exercises` and commit it).
# Three pytest runs around the two builds, which run in the background here (never in pytest):
#   notebooks (make notebooks)  | unit tests, doctests, misconceptions, packaging
#   book build (Sphinx, 1 core) | the notebooks' report, the sandboxed grading (tests/grading)
#   the book (tests/book) and the rendered site (tests/site)
# Every step runs even when one before it failed; then make test fails, naming them.
# Extra pytest options: make test PYTEST_ARGS="-x".
test: setup
	@start=$$(date +%s); failed=""; mkdir -p _build; \
	pytest_step() { name=$$1; shift; $(PYTEST) "$$@"; rc=$$?; \
	  if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then failed="$$failed, $$name (exit $$rc)"; fi; }; \
	echo "make test: executing every notebook in the background (make notebooks; log: _build/notebooks.log)"; \
	INITLAB_PROGRESS=0 $(PY) scripts/build_book.py --execute-only $(NB_REPORT) --chapters \
	  > _build/notebooks.log 2>&1 & notebooks=$$!; \
	pytest_step "unit, doctests, misconceptions, packaging" \
	  -m "not notebooks and not sandbox and not book and not browser"; \
	echo "make test: waiting for the notebooks ..."; \
	wait $$notebooks || failed="$$failed, make notebooks (exit $$?; see _build/notebooks.log)"; \
	echo "make test: building the book in the background (log: _build/book-build.log)"; \
	INITLAB_PROGRESS=0 $(PY) scripts/build_book.py > _build/book-build.log 2>&1 & book=$$!; \
	pytest_step "notebooks, sandboxed grading" -m "notebooks or sandbox" chapters tests/grading; \
	echo "make test: waiting for the book build ..."; \
	wait $$book || failed="$$failed, the book build (exit $$?; see _build/book-build.log)"; \
	pytest_step "book, site" -m "book or browser" tests/book tests/site; \
	if [ -n "$$failed" ]; then echo "make test FAILED: $${failed#, }"; fi; \
	echo "make test wall time: $$(( $$(date +%s) - start )) s"; [ -z "$$failed" ]

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=.

grade: setup
	@if [ -z "$(CHAPTER)" ] || [ -z "$(SUBMISSIONS)" ]; then \
	  echo "usage: make grade CHAPTER=03_xavier SUBMISSIONS='submissions/*.ipynb' [JOBS=2] [OUT=grades.csv] [TIMEOUT=300] [FEEDBACK_DIR=feedback]" >&2; exit 2; fi
	$(PY) -m initlab.grading grade $(CHAPTER) $(SUBMISSIONS) --jobs $(or $(JOBS),2) --out $(or $(OUT),grades.csv) \
	  --timeout $(or $(TIMEOUT),300) $(if $(FEEDBACK_DIR),--feedback-dir $(FEEDBACK_DIR))

clean:
	rm -rf _build exercises/_autograder
