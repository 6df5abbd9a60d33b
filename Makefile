# Each target sets up what it needs: a virtual environment in .venv with the CPU build of torch.
VENV ?= .venv
PYTHON ?= python3
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CLIP := clips/street.mp4
TINY := .cache/tiny-florence
# The annotators' own readers the export tests read streamer's exports with, each apart from the product's venv:
# Datumaro (CVAT's dataset layer) in a venv of its own; Ultralytics beside this torch (--no-deps: a plain install
# pulls a CUDA torch), on PYTHONPATH only when a test runs it (torchvision would change transformers' processors).
DATUMARO := .cache/datumaro-venv
ULTRALYTICS := .cache/ultralytics-lib

.PHONY: demo demo-offline test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The main job on the bundled clip with the default checkpoint (fetched once, then cached).
demo: $(STAMP)
	$(VENV)/bin/streamer run $(CLIP)

# The same job offline, on a tiny random Florence-2 built locally: shows the outputs, not real detections.
demo-offline: $(STAMP)
	$(PY) tests/tiny_florence.py $(TINY)
	$(VENV)/bin/streamer run $(CLIP) --model $(TINY)

$(DATUMARO)/.installed:
	$(PYTHON) -m venv $(DATUMARO)
	$(DATUMARO)/bin/pip install -q "datumaro==1.13.12"
	touch $@

$(ULTRALYTICS)/.installed: $(STAMP)
	$(PY) -m pip install -q --no-deps --target $(ULTRALYTICS) "ultralytics==8.4.190" "torchvision==0.28.0"
	touch $@

test: $(STAMP) $(DATUMARO)/.installed $(ULTRALYTICS)/.installed
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .cache runs
