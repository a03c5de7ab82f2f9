# Every target sets up what it needs; running one twice does no work twice.
#   make report   [MURA_DIR=/path/to/MURA-v1.1] [PROFILE=quick|smoke|full] [BACKEND=numpy|cupy|auto]
#                 [SCHEDULER=tcp://host:8786|local:N]
#                 (no PROFILE: full when the backend is CuPy, else quick; SCHEDULER: the
#                 training runs go to a Dask cluster, see README "More than one machine")
#   make test     the linter, unit tests, the end-to-end smoke report and the browser tests
#   make lint     ruff, with the rules in pyproject.toml
#   make bench    every architecture at 96 and 227 against PyTorch CPU (installs it)
#   make lab      JupyterLab on the notebooks, in the project's .venv
#   make student  [STUDENT=student] the course's student edition (ASSIGNMENT.md in it)
#   make grade    [FOLDER=.] the grader's table of the assignment's pieces of a package folder

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One stamp per set of extras (pyproject.toml): a target installs what it needs, once.
STAMP := $(VENV)/.installed
REPORT_STAMP := $(VENV)/.installed-report
TEST_STAMP := $(VENV)/.installed-test
CLUSTER_STAMP := $(VENV)/.installed-cluster
PROFILE ?=
BACKEND ?= numpy
SEED ?= 0
MURA_DIR ?=
SCHEDULER ?=
TEX_PACKAGES := texlive-xetex texlive-fonts-recommended texlive-plain-generic pandoc poppler-utils
BROWSER_PACKAGES := chromium fonts-dejavu-core
, := ,

.PHONY: setup tex browser lint test report bench bench-step bench-deps lab student grade clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(REPORT_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[report]'
	touch $(REPORT_STAMP)

$(CLUSTER_STAMP): $(REPORT_STAMP)
	$(PY) -m pip install --quiet -e '.[report,cluster]'
	touch $(CLUSTER_STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[report,cluster,dev,browser]'
	touch $(TEST_STAMP)

# Debian packages, installed through apt where possible:
# $(call apt_install,TARGET,PACKAGES,TEST THAT THEY ARE THERE,SAID WHEN THERE,SAID WHEN NOT)
define apt_install
	@if $(3); then \
		echo "$(1): $(4)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "$(1): installing $(2) with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(2) >/dev/null; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
		echo "$(1): installing $(2) with sudo apt-get"; \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(2) >/dev/null; \
	else \
		echo "$(1): $(5)"; \
	fi
endef

# XeLaTeX and pandoc for nbconvert's PDF export.
TEX_THERE := command -v xelatex >/dev/null && command -v pandoc >/dev/null && command -v pdfimages >/dev/null
TEX_MISSING := cannot install XeLaTeX/pandoc here (no apt-get or no root). Install them yourself ($(TEX_PACKAGES)); until then only the HTML report is built.
tex:
	$(call apt_install,tex,$(TEX_PACKAGES),$(TEX_THERE),xelatex$(,) pandoc and poppler are present,$(TEX_MISSING))

# Debian's Chromium for the browser tests (Playwright drives it; its own browser download is
# not needed); without it those tests are skipped.
BROWSER_MISSING := cannot install Chromium here (no apt-get or no root); the browser tests will be skipped.
browser:
	$(call apt_install,browser,$(BROWSER_PACKAGES),command -v chromium >/dev/null,$$(chromium --version 2>/dev/null | head -1) is present,$(BROWSER_MISSING))

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .

test: $(TEST_STAMP) tex browser lint
	MPLBACKEND=agg $(PY) -m pytest -q

report: $(REPORT_STAMP) $(if $(SCHEDULER),$(CLUSTER_STAMP),) tex
	MPLBACKEND=agg $(PY) -m mura_core report $(if $(PROFILE),--profile $(PROFILE),) --backend $(BACKEND) --seed $(SEED) $(if $(MURA_DIR),--data $(MURA_DIR),) $(if $(SCHEDULER),--scheduler $(SCHEDULER),)

# PyTorch only for the comparison, never a dependency of mura_core itself. The CPU build
# 2.13.0 is pinned first, so the bench extra's torch>=2.1 fetches nothing larger.
bench-deps: setup
	@if $(PY) -c 'import torch' 2>/dev/null; then \
		echo "bench-deps: torch $$($(PY) -c 'import torch; print(torch.__version__)') is installed"; \
	else \
		$(PY) -m pip install --quiet 'torch==2.13.0' || $(PY) -m pip install --quiet 'torch>=2.1'; \
	fi
	$(PY) -m pip install --quiet -e '.[bench]'

# The suite: every architecture at 96x96 and 227x227 against PyTorch, the FLOP limit, the
# evaluation pass (docs/benchmarks.md). One network in detail, with its layers:
#   make bench-step BENCH_ARGS='--size 96 --steps 10 --warmup 2 --layers'
BENCH_ARGS ?=
bench: bench-deps
	$(PY) -m benchmarks.bench_suite $(BENCH_ARGS)

bench-step: bench-deps
	$(PY) -m benchmarks.bench_step $(BENCH_ARGS)

# JupyterLab from the .venv: its "python3" kernel, the one the notebooks name, is the .venv's
# own Python (ipykernel's kernelspec inside the .venv), so nothing is registered elsewhere.
LAB_STAMP := $(VENV)/.lab-installed

$(LAB_STAMP): $(REPORT_STAMP)
	$(PY) -m pip install --quiet -e '.[report,lab]'
	touch $(LAB_STAMP)

lab: $(LAB_STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

STUDENT ?= student
FOLDER ?= .
student: $(STAMP)
	$(PY) -m mura_core student --out $(STUDENT)

# The grader needs Python and NumPy only (a student edition points it at its reference's).
GRADE_PY ?= $(PY)
grade: $(if $(filter $(PY),$(GRADE_PY)),$(STAMP),)
	$(GRADE_PY) -m mura_core grade $(FOLDER)

clean:
	rm -rf figures/*.png figures/*.pdf report/executed report/results report/report.* .pytest_cache
