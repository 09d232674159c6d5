# `make test` and `make demo` do all set-up themselves on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PHOTOS := $(VENV)/.photos-installed
MEDIAPIPE := mediapipe==0.10.21

.PHONY: test test-fast demo lint venv photos clean-demo

# The project itself is installed editable (pyproject.toml): its packages and entry points import from anywhere,
# so `python scripts/<name>.py` needs no path set-up.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# the optional MediaPipe keypoint backend, lean: mediapipe without its declared dependencies (see the file)
$(PHOTOS): requirements-photos.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-photos.txt
	$(PY) -m pip install --quiet --no-deps $(MEDIAPIPE)
	touch $(PHOTOS)

photos: $(PHOTOS)

test: $(STAMP) $(PHOTOS)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# the edit loop: everything but the tests marked slow (learning, training subprocesses, torchrun, SIGKILL)
test-fast: $(STAMP) $(PHOTOS)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

demo: $(STAMP)
	$(PY) scripts/demo.py

clean-demo:
	rm -rf runs/demo datasets/synthetic_small
