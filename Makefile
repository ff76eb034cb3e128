# One entry point per job. `make demo` and `make test` set up a fresh machine by themselves (venv + installs).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL ?=
CLIP ?=
NAME ?=
PRESET ?= tiny

.PHONY: setup test demo gui export export-0.5b parity conformance bench bench-memory bench-gpu gpu-check gpu-carry \
	gpu-run clean timing-data timing-train timing-eval timing-bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch from the local disk; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# Only the Qwen2.5 vocabulary file is used from dashscope; its dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps dashscope
	# Spoken feedback (espeak-ng) and the pictures' font (DejaVu Sans) come from Debian, installed where we are root
	# with apt; elsewhere the speech tests skip with the reason and the pictures fall back to Pillow's font.
	@need=""; command -v espeak-ng >/dev/null 2>&1 || need="espeak-ng"; \
	test -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf || need="$$need fonts-dejavu-core"; \
	if [ -n "$$need" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && apt-get install -y -qq $$need; \
	elif [ -n "$$need" ]; then echo "not installed (needs root and apt):$$need"; fi
	# The ffmpeg tool makes the test videos (PyAV bundles its own libraries; nothing at run time needs the tool).
	@if ! command -v ffmpeg >/dev/null; then \
		if command -v apt-get >/dev/null && { DEBIAN_FRONTEND=noninteractive apt-get install -y -q ffmpeg >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ffmpeg >/dev/null; }; }; \
		then echo "installed ffmpeg (for the test videos)"; \
		else echo "ffmpeg is missing and could not be installed: the video tests will skip"; fi; \
	fi
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The demo runs the runtime on exported engines; the exporter runs here, never inside the runtime.
engines/tiny/manifest.json: $(STAMP)
	$(BIN)/python -m export --preset tiny

# Writes artifacts/demo/{annotated.mp4,timeline.png,events.jsonl,summary.json}; e.g. make demo DEMO_ARGS=--speak
DEMO_ARGS ?=
demo: $(STAMP) engines/tiny/manifest.json
	$(BIN)/python -m runtime.demo $(DEMO_ARGS)

# A window for `python -m runtime.webcam --source 0`: swap the headless OpenCV build for the GUI one (both install the
# same cv2 package, so one replaces the other; re-running the set-up brings the headless build back). docs/demo.md
gui: $(STAMP)
	$(BIN)/python -m pip uninstall -y -q opencv-python-headless
	$(BIN)/python -m pip install -q --force-reinstall --no-deps "opencv-python>=4.9"

export: $(STAMP)
ifneq ($(MODEL),)
	$(BIN)/python -m export --model $(MODEL) --clip $(CLIP) $(if $(NAME),--name $(NAME))
else
	$(BIN)/python -m export --preset $(PRESET) $(if $(NAME),--name $(NAME))
endif

export-0.5b: $(STAMP)
	$(BIN)/python -m export --preset 0.5b

parity: $(STAMP)
	$(BIN)/python -m validation.parity --engines engines/$(if $(NAME),$(NAME),$(PRESET))

conformance: $(STAMP)
	$(BIN)/python -m mobile_videogpt.conformance ../shared/golden/mvgpt_tiny_a

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all --out artifacts/bench

# The webcam CLI over 12 minutes of unpaced synthetic stream: peak RSS, steady RSS and the RSS / KV slopes per hour;
# and the CPU arena's speed as a same-run ratio.
bench-memory: $(STAMP) engines/tiny/manifest.json
	$(BIN)/python -m benchmarks.memory --out artifacts/bench/memory --arena-ratio-windows 6

# On a CUDA machine (see docs/export.md): PyTorch fp16 numerics + timings, TensorRT where installed.
gpu-check:
	$(PY) -m validation.gpu_numerics --out artifacts/gpu_numerics

# On a CUDA machine: the runtime's StreamSession, stage table, curves and greedy-vs-isolated decode with pytorch on
# cuda (fp16, fp32) at 0.5B; TensorRT with TRT=DIR. Without the dashscope vocabulary there, carry
# artifacts/gpu_tokenizer (the tokenizer files of checkpoints/tiny/model; see docs/benchmarks.md).
TRT ?=
bench-gpu:
	$(PY) -m benchmarks.gpu --out artifacts/bench_gpu $(if $(wildcard artifacts/gpu_tokenizer/tokenizer.json),--tokenizer-dir artifacts/gpu_tokenizer) $(if $(TRT),--tensorrt-engines $(TRT))

# The prepared GPU run (docs/gpu.md). gpu-carry writes, here, the ignored folders to carry to the GPU machine
# (carry: artifacts/gpu_site artifacts/gpu_tokenizer artifacts/golden); gpu-run runs the script (OUT=... on the device).
gpu-carry: $(STAMP)
	mkdir -p artifacts/gpu_site/dashscope/resources artifacts/gpu_tokenizer artifacts/golden
	cp $$($(BIN)/python -c "import importlib.util as u; print(u.find_spec('dashscope').submodule_search_locations[0])")/resources/qwen.tiktoken artifacts/gpu_site/dashscope/resources/
	touch artifacts/gpu_site/dashscope/__init__.py
	test -f checkpoints/tiny/model/tokenizer.json || $(BIN)/python -m mobile_videogpt.synthetic --preset tiny --out checkpoints/tiny
	cp checkpoints/tiny/model/tokenizer.json checkpoints/tiny/model/tokenizer_config.json checkpoints/tiny/model/chat_template.jinja checkpoints/tiny/model/generation_config.json artifacts/gpu_tokenizer/
	-cp -r ../shared/golden/mvgpt_tiny_a/. artifacts/golden/

gpu-run:
	bash scripts/gpu_run.sh $(GPU_RUN_ARGS)

# When to speak (docs/timing.md, docs/training.md): annotated synthetic episodes -> fine-tuned action tokens on the
# tiny model -> the model policy against every_n / random / motion on held-out episodes, through the runtime.
TIMING_DIR ?= artifacts/timing_bench
TIMING_CFG ?= evaluation/timing_bench.yaml
TIMING_SEED ?= 0

checkpoints/tiny/model/synthetic.json: $(STAMP)
	$(BIN)/python -m mobile_videogpt.synthetic --preset tiny --out checkpoints/tiny

timing-data: $(STAMP)
	$(BIN)/python -m evaluation.synthetic_benchmark --out $(TIMING_DIR) --seed $(TIMING_SEED)

timing-train: $(STAMP) checkpoints/tiny/model/synthetic.json
	$(BIN)/python -m training --model checkpoints/tiny/model --clip checkpoints/tiny/clip --config $(TIMING_CFG) \
		--gt $(TIMING_DIR)/train.jsonl --videos $(TIMING_DIR)/videos --features $(TIMING_DIR)/features \
		--out checkpoints/tiny-coach --threads 2
	$(BIN)/python -m export --model checkpoints/tiny-coach/model --clip checkpoints/tiny-coach/clip --name tiny-coach \
		--precision fp32 --threads 2

timing-eval: $(STAMP)
	$(BIN)/python -m evaluation.policy_benchmark --engines engines/tiny-coach --benchmark $(TIMING_DIR) \
		--config $(TIMING_CFG) --out $(TIMING_DIR)/results

timing-bench: timing-data timing-train timing-eval

clean:
	rm -rf engines/* artifacts checkpoints .pytest_cache
