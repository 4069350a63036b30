# Every target sets itself up: a fresh clone needs only python3 (>= 3.10) and pip's registry.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-quick bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/deepdream video sample_media/pan_cat.mp4 out/pan_cat_dream.mp4
	@echo "demo: wrote out/pan_cat_dream.mp4 (config beside it: out/pan_cat_dream.mp4.yaml)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check pipeline stages tests bench

clean:
	rm -rf out .pytest_cache .ruff_cache
