# One entry point per job. `make demo` and `make test` set up a fresh machine by themselves (venv + installs).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL ?=
CLIP ?=
NAME ?=
PRESET ?= tiny

.PHONY: setup test demo export export-0.5b parity conformance bench bench-gpu gpu-check clean \
	timing-data timing-train timing-eval timing-bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch from the local disk; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# Only the Qwen2.5 vocabulary file is used from dashscope; its dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps dashscope
	touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The demo runs the runtime on exported engines; the exporter runs here, never inside the runtime.
engines/tiny/manifest.json: $(STAMP)
	$(BIN)/python -m export --preset tiny

demo: $(STAMP) engines/tiny/manifest.json
	$(BIN)/python -m runtime.demo

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

# On a CUDA machine (see docs/export.md): PyTorch fp16 numerics + timings, TensorRT where installed.
gpu-check:
	$(PY) -m validation.gpu_numerics --out artifacts/gpu_numerics

# On a CUDA machine: the runtime's StreamSession, stage table, curves and greedy-vs-isolated decode with pytorch on
# cuda (fp16, fp32) at 0.5B; TensorRT with TRT=DIR. Without the dashscope vocabulary there, carry
# artifacts/gpu_tokenizer (the tokenizer files of checkpoints/tiny/model; see docs/benchmarks.md).
TRT ?=
bench-gpu:
	$(PY) -m benchmarks.gpu --out artifacts/bench_gpu $(if $(wildcard artifacts/gpu_tokenizer/tokenizer.json),--tokenizer-dir artifacts/gpu_tokenizer) $(if $(TRT),--tensorrt-engines $(TRT))

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
