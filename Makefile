# Two commands do all set-up on a fresh machine:
#   make quickstart   -> venv, install, synthetic dataset, train + evaluate tiny HOICLIP (small pretrained CLIP), print the metric table
#   make test         -> venv, install, run the test suite and the docstring examples
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pins used for set-up here (pyproject.toml only sets lower bounds)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
QUICKSTART_DIR ?= data/quickstart
STAMP := $(VENV)/.installed

.PHONY: install quickstart test lint docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# synthetic world -> verb embeddings by visual semantic arithmetic (the small CLIP of weights/hoiclip_small.pt)
# -> train HOICLIP with every knowledge-transfer part on -> select on validation -> test once -> mAP table
quickstart: $(STAMP)
	$(BIN)/hoiclip synth --out $(QUICKSTART_DIR) --easy true --image_size 160 --seed 0 --num_train 800 \
		--num_test 100 --num_val 100
	$(BIN)/hoiclip verb-embeddings --config configs/quickstart.yaml --out $(QUICKSTART_DIR)/verb_embeddings.pt
	$(BIN)/hoiclip fit --config configs/quickstart.yaml \
		--model.init_args.weights.verb_embeddings $(QUICKSTART_DIR)/verb_embeddings.pt

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests src  # src: the docstring examples (--doctest-modules)

# the documentation site, built strictly into site/ (tests/test_docs.py runs the same build in `make test`)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools

clean:
	rm -rf $(VENV) $(QUICKSTART_DIR) data/synthetic runs site
