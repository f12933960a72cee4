# Two commands matter: `make test` and `make demo`. Both build their own virtualenv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint typecheck pytest bench test-s3 clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# e.g. make bench BENCH_ARGS="--input bson --formats json"
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Run the integration suite against your own S3-compatible server (see compose.yaml), e.g.
#   make test-s3 S3_ENDPOINT_URL=http://127.0.0.1:9000
test-s3: $(STAMP)
	S3_ENDPOINT_URL=$(S3_ENDPOINT_URL) $(BIN)/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
