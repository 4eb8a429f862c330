# Quicksviewer for SGLang 0.5.17 (and 0.5.23, PIN=0.5.23): patch series + overlay on
# the pinned upstream.
# Every target installs what it needs (make setup) first; see README.md.

PYTHON ?= python3.11
# make <target> PIN=<version>: another pinned SGLang release of pin.toml (0.5.23), with
# its own venv, requirements and tree; no PIN (or PIN=<the default>): the default
# release, as below. The names are tools/pin.py's (release_suffix).
PIN ?=
DEFAULT_PIN := $(shell sed -n 's/^default *= *"\(.*\)"/\1/p' pin.toml)
ifeq ($(filter-out $(DEFAULT_PIN),$(PIN)),)
VENV ?= .venv
BUILD ?= build/sglang
REQUIREMENTS ?= tools/requirements-cpu.txt
else
VENV ?= .venv-$(PIN)
BUILD ?= build/sglang-$(PIN)
REQUIREMENTS ?= tools/requirements-cpu-$(PIN).txt
endif
RELEASE := $(if $(PIN),--release $(PIN))
VPY := $(VENV)/bin/python
PYTEST_ARGS ?=
# what make test runs: the whole suite on the default release; on another release the
# model tests (config, Engine and server parity on the tiny checkpoints, bad input,
# the upstream-style test, return_segments), the tooling being release-independent
# (CI runs both). There the parity runs in fp32 only (MODEL_SELECT: the bf16 cases and
# test_model_limits.py, the overlay's own checks, run on the default release) to keep
# CI within its time budget (docs/design.md, "CI")
MODEL_TESTS := tests/model/test_model_config.py tests/model/test_engine_smoke.py \
	tests/model/test_model_parity.py tests/model/test_model_server.py \
	tests/model/test_upstream_overlay.py tests/model/test_model_segments.py
MODEL_SELECT := -k "not bf16"
OTHER_RELEASE := $(filter-out $(DEFAULT_PIN),$(PIN))
TESTS ?= $(if $(OTHER_RELEASE),$(MODEL_TESTS),tests)
TEST_SELECT ?= $(if $(OTHER_RELEASE),$(MODEL_SELECT))
# make test JUNIT=path also writes pytest's JUnit report of tests/ there (CI does)
JUNIT ?=

# make apply FORCE=1 discards user work in $(BUILD) (listed first)
# make apply SGLANG_SRC=/path/to/sglang builds the base from a checkout at v0.5.17
APPLY_FLAGS := --link-venv $(VENV) $(if $(FORCE),--force) \
	$(if $(SGLANG_SRC),--sglang-src $(SGLANG_SRC))
TREE := --build-dir $(BUILD) $(RELEASE)

.PHONY: help setup pins fetch apply port export export-cpu verify check pr test demo bench

help:
	@echo "make demo      serve a tiny Quicksviewer on CPU and ask it about a generated video"
	@echo "make test      setup + apply + the whole test suite"
	@echo "make setup     create/refresh $(VENV) from $(REQUIREMENTS)"
	@echo "make pins      re-resolve $(REQUIREMENTS:.txt=.in) into the exact pins of $(REQUIREMENTS)"
	@echo "make apply     build $(BUILD): pinned SGLang + patches/ + overlay/ + patches/cpu/"
	@echo "make export    write patches/ and overlay/ back from $(BUILD)"
	@echo "make port PIN=0.5.23 PATCH=<entry>  port a series entry to that release"
	@echo "...  PIN=0.5.23  any of these on the second pinned release ($(BUILD), $(VENV))"
	@echo "make export-cpu  same, but your new commits join the CPU group"
	@echo "make verify    check the series on a fresh pinned tree"
	@echo "make videomme PARQUET=... VIDEOS=... [SERVER=url]  Video-MME through a running server"
	@echo "make bench-serving [SERVER=url] [SERVING_ARGS=...]  video serving benchmark"
	@echo "make check     the pre-submit gate on $(BUILD) as it is (no rebuild)"
	@echo "make pr        apply + check, then the upstream PR kit in out/pr/"

setup:
	@$(PYTHON) -m tools setup --venv $(VENV) --requirements $(REQUIREMENTS)

# deliberate: rewrites $(REQUIREMENTS) from pip's resolution of
# $(REQUIREMENTS:.txt=.in) (review the diff; the next make setup installs it)
pins: setup
	$(VPY) -m tools pins --requirements-in $(REQUIREMENTS:.txt=.in) --requirements $(REQUIREMENTS)

fetch: setup
	$(VPY) -m tools fetch $(RELEASE)

apply: setup
	$(VPY) -m tools apply $(TREE) $(APPLY_FLAGS)

# make port PIN=0.5.23 PATCH=<series file name, or cpu/<name>>: the tree up to that
# entry, with it applied (git am --reject) for porting; then make export PIN=0.5.23
# (docs/design.md, "Porting a patch")
port: setup
	$(if $(PATCH),,$(error give PATCH=<series entry>, e.g. PATCH=0005-...patch))
	$(VPY) -m tools apply $(TREE) $(APPLY_FLAGS) --port $(PATCH)

export: setup
	$(VPY) -m tools export $(TREE)

export-cpu: setup
	$(VPY) -m tools export $(TREE) --to-cpu

verify: setup
	$(VPY) -m tools verify $(RELEASE) $(if $(SGLANG_SRC),--sglang-src $(SGLANG_SRC))

# the pre-submit gate: the tree clean and built from the current inputs, compileall,
# black + isort (overlay), codespell, missing-comma guard (tools/check.py)
check: setup
	$(VPY) -m tools check $(TREE)

# the upstream PR kit: out/pr/*.patch (qsv/base..qsv/upstream) + out/pr/DESCRIPTION.md
pr: apply
	$(VPY) -m tools check $(TREE)
	$(VPY) -m tools pr $(TREE)

test: apply
	$(VPY) -m pytest $(TESTS) $(TEST_SELECT) $(PYTEST_ARGS) $(if $(JUNIT),--junitxml=$(JUNIT))

demo: apply
	$(VPY) -m tools demo

# --- wheels (docs/gpu.md) ----------------------------------------------------
# make wheel [WHEEL_FLAGS=--with-cpu-group]   dist/sglang-0.5.17+qsv.N-cp3XX-*.whl
# make wheelhouse [SM=sm100]                  dist/qsv-wheelhouse-cp312-$(SM).tar.xz
SM ?= sm90
WHEEL_FLAGS ?=
.PHONY: wheel wheelhouse wheelhouse-check
wheel: apply
	$(VPY) -m tools wheel $(TREE) $(WHEEL_FLAGS)

wheelhouse: apply
	$(VPY) -m tools wheelhouse build $(TREE) --sm $(SM)

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
