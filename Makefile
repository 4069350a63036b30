# Every target sets itself up: a fresh clone needs only python3 (>= 3.10) and pip's registry.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo360 demo-zoom test test-quick bench gpu-check lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/deepdream video sample_media/pan_cat.mp4 out/pan_cat_dream.mp4
	$(BIN)/deepdream preview out/pan_cat_dream.mp4 out/pan_cat_dream_preview.png --source sample_media/pan_cat.mp4
	@echo "demo: wrote out/pan_cat_dream.mp4 (config beside it: out/pan_cat_dream.mp4.yaml) and its preview out/pan_cat_dream_preview.png"

# The committed 360° clip, Hallucination Machine style, at 768x384 (the first 2 s): a few minutes on 2 cores.
demo360: $(STAMP)
	mkdir -p out
	$(BIN)/deepdream video sample_media/testRoom1_1920Mono.mp4 out/room360_dream.mp4 -c hallucination_vr \
		--set input.max_side=768 --set video.max_frames=60
	$(BIN)/deepdream preview out/room360_dream.mp4 out/room360_dream_preview.png --source sample_media/testRoom1_1920Mono.mp4
	@echo "demo360: wrote out/room360_dream.mp4 (360° metadata, plays in a headset) and its look-around preview out/room360_dream_preview.png"

# The infinite zoom from one committed still (deepdream animate, preset infinite_zoom): 4 s at 24 fps, 320 px.
demo-zoom: $(STAMP)
	mkdir -p out
	$(BIN)/deepdream animate sample_media/chelsea.png out/chelsea_zoom.mp4 -c infinite_zoom \
		--set animate.seconds=4 --set animate.fps=24 --set input.max_side=320
	$(BIN)/deepdream preview out/chelsea_zoom.mp4 out/chelsea_zoom_preview.png
	@echo "demo-zoom: wrote out/chelsea_zoom.mp4 (config beside it: out/chelsea_zoom.mp4.yaml) and its preview out/chelsea_zoom_preview.png"

# Two xdist workers, one torch thread each (tests/conftest.py); the Ray tests share one worker.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench

# On a machine with a CUDA GPU (about 10 minutes): the GPU tests, then every bench section on CUDA and the CPU,
# against BENCH_BASE when it is set; the numbers land in out/bench/gpu.json.
gpu-check: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_cuda.py
	mkdir -p out/bench
	$(BIN)/python -m bench --device all --budget 420 --json out/bench/gpu.json

lint: $(STAMP)
	$(BIN)/ruff check pipeline stages tests bench

clean:
	rm -rf out .pytest_cache .ruff_cache
