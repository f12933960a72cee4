# Two commands matter: `make test` and `make demo`. Both build their own virtualenv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo lint typecheck pytest bench test-s3 clean

# The encoder and format tests run a second time on the pure-Python core, which must write
# the same bytes as the compiled one.
BOTH_MODES := tests/test_bsonjson.py tests/test_raw_input.py tests/test_encoder.py \
	tests/test_formats.py tests/test_format_roundtrip.py tests/test_json.py tests/test_jsonl.py \
	tests/test_fragments.py tests/test_split_events.py tests/test_typed_columns.py tests/test_bsonpath.py

# The compiled core is built by the editable install, so its sources are prerequisites too.
$(STAMP): pyproject.toml setup.py rigatoni_s3/_bsonjson_c.pyx rigatoni_s3/_bsonjson_walk.h \
	rigatoni_s3/_bsonpath_find.h
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
	RIGATONI_S3_NO_EXTENSIONS=1 $(BIN)/pytest -q $(BOTH_MODES)

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build rigatoni_s3/_bsonjson_c.c rigatoni_s3/_bsonjson_c.*.so
