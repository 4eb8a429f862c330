# Quicksviewer for SGLang 0.5.17: patch series + overlay on the pinned upstream.
# Every target installs what it needs (make setup) first; see README.md.

PYTHON ?= python3.11
VENV ?= .venv
VPY := $(VENV)/bin/python
BUILD ?= build/sglang
PYTEST_ARGS ?=
# make test JUNIT=path also writes pytest's JUnit report of tests/ there (CI does)
JUNIT ?=

# make apply FORCE=1 discards user work in $(BUILD) (listed first)
# make apply SGLANG_SRC=/path/to/sglang builds the base from a checkout at v0.5.17
APPLY_FLAGS := --link-venv $(VENV) $(if $(FORCE),--force) \
	$(if $(SGLANG_SRC),--sglang-src $(SGLANG_SRC))

.PHONY: help setup pins fetch apply export export-cpu verify check pr test demo bench

help:
	@echo "make demo      serve a tiny Quicksviewer on CPU and ask it about a generated video"
	@echo "make test      setup + apply + the whole test suite"
	@echo "make setup     create/refresh $(VENV) from tools/requirements-cpu.txt"
	@echo "make pins      re-resolve tools/requirements-cpu.in into the exact pins of tools/requirements-cpu.txt"
	@echo "make apply     build $(BUILD): pinned SGLang + patches/ + overlay/ + patches/cpu/"
	@echo "make export    write patches/ and overlay/ back from $(BUILD)"
	@echo "make export-cpu  same, but your new commits join the CPU group"
	@echo "make verify    check the series on a fresh pinned tree"
	@echo "make videomme PARQUET=... VIDEOS=... [SERVER=url]  Video-MME through a running server"
	@echo "make bench-serving [SERVER=url] [SERVING_ARGS=...]  video serving benchmark"
	@echo "make check     the pre-submit gate on $(BUILD) as it is (no rebuild)"
	@echo "make pr        apply + check, then the upstream PR kit in out/pr/"

setup:
	@$(PYTHON) -m tools setup --venv $(VENV) --requirements tools/requirements-cpu.txt

# deliberate: rewrites tools/requirements-cpu.txt from pip's resolution of
# tools/requirements-cpu.in (review the diff; the next make setup installs it)
pins: setup
	$(VPY) -m tools pins

fetch: setup
	$(VPY) -m tools fetch

apply: setup
	$(VPY) -m tools apply --build-dir $(BUILD) $(APPLY_FLAGS)

export: setup
	$(VPY) -m tools export --build-dir $(BUILD)

export-cpu: setup
	$(VPY) -m tools export --build-dir $(BUILD) --to-cpu

verify: setup
	$(VPY) -m tools verify $(if $(SGLANG_SRC),--sglang-src $(SGLANG_SRC))

# the pre-submit gate: the tree clean and built from the current inputs, compileall,
# black + isort (overlay), codespell, missing-comma guard (tools/check.py)
check: setup
	$(VPY) -m tools check --build-dir $(BUILD)

# the upstream PR kit: out/pr/*.patch (qsv/base..qsv/upstream) + out/pr/DESCRIPTION.md
pr: apply
	$(VPY) -m tools check --build-dir $(BUILD)
	$(VPY) -m tools pr --build-dir $(BUILD)

test: apply
	$(VPY) -m pytest tests $(PYTEST_ARGS) $(if $(JUNIT),--junitxml=$(JUNIT))

demo: apply
	$(VPY) -m tools demo

# --- wheels (docs/gpu.md) ----------------------------------------------------
# make wheel [WHEEL_FLAGS=--with-cpu-group]   dist/sglang-0.5.17+qsv.N-cp3XX-*.whl
# make wheelhouse [SM=sm100]                  dist/qsv-wheelhouse-cp312-$(SM).tar.xz
SM ?= sm90
WHEEL_FLAGS ?=
.PHONY: wheel wheelhouse wheelhouse-check
wheel: apply
	$(VPY) -m tools wheel --build-dir $(BUILD) $(WHEEL_FLAGS)

wheelhouse: apply
	$(VPY) -m tools wheelhouse build --build-dir $(BUILD) --sm $(SM)

wheelhouse-check: setup
	$(VPY) -m tools wheelhouse check --sm $(SM)

# --- GPU CI (docs/gpu.md, "The GPU CI") -----------------------------------------
# make gpu-inputs                 what the GPU host needs: the bundle + gpu_carry/qwen.tiktoken
# make gpu-baseline RUN=<dir>     ci/gpu/baseline-<gpu>.json from a recorded run (prints
#                                 the changes; commit them yourself) [COMMIT=sha DATE=d]
# make gpu-record RUN=<dir>       a fetched $OUT -> docs/gpu-runs/<date>/ + its gpu-runs.md entry
.PHONY: gpu-inputs gpu-baseline gpu-record
gpu-inputs: wheelhouse
	$(VPY) -m tools tokenizer --ranks-only --out gpu_carry

gpu-baseline: setup
	$(if $(RUN),,$(error give RUN=<recorded run directory>, e.g. RUN=docs/gpu-runs/2026-12-01))
	$(VPY) ci/gpu/gates.py baseline --run $(RUN) $(if $(COMMIT),--commit $(COMMIT)) $(if $(DATE),--date $(DATE))

gpu-record: setup
	$(if $(RUN),,$(error give RUN=<the fetched $$OUT of a GPU run>))
	$(VPY) ci/gpu/gates.py record --run $(RUN) $(if $(NAME),--name $(NAME))

# make bench [BENCH_ARGS="--model DIR --reference DIR --video V.mp4"]
# without arguments: the tiny checkpoint on CPU (a smoke run; GPU numbers come
# from ci/gpu/run.sh bench, see docs/performance.md)
bench: apply
	$(VPY) -m tools demo --prepare-only
	$(VPY) benchmarks/bench_quicksviewer.py $(or $(BENCH_ARGS),--model build/demo/quicksviewer-tiny --reference build/demo/quicksviewer-tiny-original --video build/demo/demo.mp4 --dtype float32 --out build/bench.json)

# --- Video-MME and the video serving benchmark (docs/eval.md) ------------------
# make videomme PARQUET=<videomme/test-*.parquet> VIDEOS=<folder of <videoID>.mp4>
#     [SERVER=http://127.0.0.1:30000] [LOG=build/videomme.json] [VIDEOMME_ARGS=...]
# make bench-serving [SERVER=...] [SERVING_OUT=build/bench_video_serving.json]
#     [SERVING_ARGS="--num-requests 32 --max-concurrency 8 ..."]
# Both are clients of a running server (started as in README.md); the log and the
# result are JSON. Running videomme again resumes its log.
SERVER ?= http://127.0.0.1:30000
.PHONY: videomme bench-serving
videomme: setup
	$(if $(and $(PARQUET),$(VIDEOS)),,$(error give PARQUET=... and VIDEOS=...))
	$(VPY) benchmarks/videomme.py --url $(SERVER) --parquet $(PARQUET) \
		--videos $(VIDEOS) --log $(or $(LOG),build/videomme.json) $(VIDEOMME_ARGS)

bench-serving: setup
	$(VPY) benchmarks/bench_video_serving.py --url $(SERVER) \
		--out $(or $(SERVING_OUT),build/bench_video_serving.json) $(SERVING_ARGS)

# --- checkpoints (docs/design.md section 9) -------------------------------------
# make convert SRC=<original Quicksviewer checkpoint> DST=<dir> [VISION_TOWER=<siglip dir>]
#   [MODEL_BASE=<base LLM dir>: SRC is then a stage folder with mm_projector.bin]
# make tiny OUT=<dir> [SEED=0] [DTYPE=bf16]
.PHONY: convert tiny
convert: setup
	$(VPY) -m tools convert $(SRC) $(DST) $(if $(VISION_TOWER),--vision-tower $(VISION_TOWER)) \
		$(if $(MODEL_BASE),--model-base $(MODEL_BASE))

tiny: setup
	$(VPY) -m tools tiny --out $(OUT) --seed $(or $(SEED),0) --dtype $(or $(DTYPE),bf16)
