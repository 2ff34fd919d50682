# Set-up, tests and the demo. Everything runs inside .venv in the repository root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install install-app app test test-fast build-ext demo benchmark gpu-check clean

install: $(STAMP)

# The pinned requirements by role (runtime in requirements.txt; tests, speech tools and plots in requirements/),
# all in one resolution, then the repository itself as an editable package (pyproject.toml): its modules
# import from any working directory, so no script edits sys.path. --upgrade moves the ranges of the pins to
# their newest version: `setuptools<81` replaces the setuptools 65 that Python 3.11's venv comes with, which
# cannot build an editable wheel on its own. --no-build-isolation builds with that setuptools; --no-deps leaves
# the pins alone.
REQUIREMENTS := requirements.txt requirements/test.txt requirements/speech.txt requirements/plot.txt

$(STAMP): $(REQUIREMENTS) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install --upgrade $(addprefix -r ,$(REQUIREMENTS))
	$(PY) -m pip install --no-build-isolation --no-deps -e .
	touch $(STAMP)

# The web app's optional requirements (requirements/app.txt: gradio, and selenium for its browser tests), each
# pinned and installed without resolution, so that the core pins stay as they are (why: requirements/app.txt).
APP_STAMP := $(VENV)/.installed-app

install-app: $(APP_STAMP)

$(APP_STAMP): $(STAMP) requirements/app.txt
	$(PY) -m pip install --no-deps -r requirements/app.txt
	touch $(APP_STAMP)

# The web app on http://127.0.0.1:7860 with the demo model (scripts/app.py; its options: APP_ARGS="--port 8080").
app: $(APP_STAMP)
	$(PY) scripts/app.py $(APP_ARGS)

# The compiled deformable-convolution extension (C++ CPU, plus CUDA where a toolkit is present).
build-ext: $(STAMP)
	cd models/dcn && ../../$(PY) setup.py build_ext --inplace

test: $(STAMP) build-ext
	$(PY) -m pytest -q tests

# The same without the tests marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# The CPU demo: spoken-shapes data (data/demo, kept), training, inference and J&F (output/demo/metrics.json).
demo: $(STAMP)
	$(PY) scripts/demo.py

benchmark: $(STAMP)
	$(PY) scripts/benchmark.py --device cpu

# GPU readiness (CUDA extension, CUDA tests, NCCL, GPU figures into docs/); one line and exit 0 without CUDA.
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py

clean:
	rm -rf output/demo models/dcn/build models/dcn/_C*.so
