# stochseg — the two commands a fresh machine needs:
#   make demo   installs ONNX Runtime (PyPI wheel) into .venv, builds, runs the demo case
#   make test   the same, plus the test tools (tests/python/requirements.txt), then every test
#               (Rust unit + integration, Python cross-checks)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
BIN := target/release/stochseg
ORT_VERSION := 1.31.1
DEMO_CASE := demo/BraTS-DEMO-00000-000
DEMO_OUT ?= out/demo
# newest libonnxruntime.so.* of a venv's onnxruntime wheel, looked up by the shell each time a
# recipe runs: make's $(wildcard) caches folders and would miss a venv made earlier in the run
ort_lib = $(shell ls -1 $(CURDIR)/$(1)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | sort -V | tail -n1)
export ORT_DYLIB_PATH = $(call ort_lib,$(VENV))

.PHONY: setup setup-test setup-gpu setup-viewer build demo demo-regions test test-rust test-python lint gpu-check clean batch fuzz fuzz-build install uninstall

# what the demo needs: ONNX Runtime, the library the binary loads, and its OpenVINO execution
# provider, a plugin of the same ONNX Runtime (PyPI wheels for x86-64 only) installed into the
# same venv, where the binary finds it beside the loaded library
OPENVINO_EP_VERSION := 1.8.1

setup: $(VENV)/.installed $(VENV)/.openvino-$(OPENVINO_EP_VERSION)

$(VENV)/.installed:
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet onnxruntime==$(ORT_VERSION)
	touch $@

# what the tests (and the benchmark's numpy reference) need besides: pytest, nibabel, scipy,
# the DICOM tools, the workflow engines
setup-test: $(VENV)/.test-installed

$(VENV)/.test-installed: $(VENV)/.installed tests/python/requirements.txt
	$(VPY) -m pip install --quiet onnxruntime==$(ORT_VERSION) -r tests/python/requirements.txt
	touch $@

$(VENV)/.openvino-$(OPENVINO_EP_VERSION): $(VENV)/.installed
	if [ "$$(uname -m)" = x86_64 ]; then \
	  $(VPY) -m pip install --quiet onnxruntime-ep-openvino==$(OPENVINO_EP_VERSION); \
	else \
	  echo "setup: no onnxruntime-ep-openvino wheel for $$(uname -m); run with --device cpu" >&2; \
	fi
	touch $@

# OHIF's SEG loader for tests/python/test_viewer.py: @cornerstonejs/adapters and dcmjs at the
# versions of tests/viewer/package-lock.json (needs node and npm)
VIEWER := tests/viewer
setup-viewer: $(VIEWER)/node_modules/.package-lock.json

$(VIEWER)/node_modules/.package-lock.json: $(VIEWER)/package-lock.json $(VIEWER)/package.json
	cd $(VIEWER) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

# GPU: the onnxruntime-gpu wheel with its CUDA 13 / cuDNN 9 wheels (and TensorRT 10 with
# TENSORRT=1) in .venv-gpu; the binary preloads them from there by absolute path.
GPU_VENV := .venv-gpu

setup-gpu: $(GPU_VENV)/.installed

$(GPU_VENV)/.installed:
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GPU_VENV)/bin/python -m pip install --quiet "onnxruntime-gpu[cuda,cudnn]==$(ORT_VERSION)" numpy
	if [ -n "$(TENSORRT)" ]; then $(GPU_VENV)/bin/python -m pip install --quiet "tensorrt-cu13-libs>=10,<11"; fi
	touch $@

# on a machine with an NVIDIA GPU: CPU vs CUDA (vs TensorRT) on the demo, agreement and timings
gpu-check: setup-gpu build
	ORT_DYLIB_PATH=$(call ort_lib,$(GPU_VENV)) PYTHON=$(GPU_VENV)/bin/python tests/gpu/device_check.sh $(BIN)

build:
	cargo build --release --locked

demo: setup build
	$(BIN) run --pipeline pipelines/brats-goat-stochastic.yaml --case $(DEMO_CASE) --out $(DEMO_OUT) --overwrite
	@echo "demo report: $(DEMO_OUT)/report.yaml"

# the sub-regions: three four-class demo U-Nets, per-region maps and blobs, the BraTS label map
DEMO_REGIONS_OUT ?= out/demo-regions
demo-regions: setup build
	$(BIN) run --pipeline pipelines/brats-goat-regions.yaml --case $(DEMO_CASE) --out $(DEMO_REGIONS_OUT) --overwrite
	@echo "demo report: $(DEMO_REGIONS_OUT)/report.yaml"

# a cohort, one make job per case: make batch CASES=DIR OUT=DIR [-j N] (see pipelines/batch.mk)
batch: setup build
	$(MAKE) -f pipelines/batch.mk BIN=$(BIN)

# the relocatable installed tree (docs/install.md): PREFIX/bin/stochseg, ONNX Runtime in
# PREFIX/lib/stochseg, pipelines, models and workflows in PREFIX/share/stochseg, man pages and
# shell completions; DESTDIR=... stages it for a package. Uninstall removes what the manifest
# (PREFIX/share/stochseg/install-manifest) lists.
PREFIX ?= /usr/local

install: setup build
	scripts/install.sh install "$(PREFIX)" $(BIN) $(VENV)

uninstall:
	scripts/install.sh uninstall "$(PREFIX)"

test: setup setup-test setup-viewer build test-rust test-python

test-rust:
	cargo test --release --locked

test-python: setup-test
	$(VPY) -m pytest -q -rs tests/python

lint:
	python3 scripts/module_cycles.py
	cargo fmt --all -- --check
	cargo clippy --release --all-targets -- -D warnings

# fuzzing (docs/robustness.md): each target FUZZ_SECONDS from the seeds in fuzz/corpus/<target>
# (new inputs go to fuzz/work/, crashes to fuzz/artifacts/). With cargo-fuzz and a nightly
# toolchain the targets are built with AddressSanitizer (`cargo fuzz build`); without, with the
# same coverage instrumentation on the stable toolchain and no sanitizer.
FUZZ_SECONDS ?= 60
# FUZZ_ASAN=no: the stable-toolchain build even where cargo-fuzz and nightly are installed
FUZZ_ASAN ?= auto
FUZZ_TARGETS := nifti dicom_series pipeline_config
FUZZ_TRIPLE = $(shell rustc -vV | sed -n 's/^host: //p')
FUZZ_BIN = fuzz/target/$(FUZZ_TRIPLE)/release
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks

fuzz-build:
	if [ "$(FUZZ_ASAN)" != no ] && rustup toolchain list 2>/dev/null | grep -q '^nightly' \
	    && cargo +nightly fuzz --version >/dev/null 2>&1; then \
	  cd fuzz && cargo +nightly fuzz build -O -a; \
	else \
	  echo "fuzz-build: no cargo-fuzz/nightly, building without AddressSanitizer" >&2; \
	  RUSTFLAGS="$(FUZZ_RUSTFLAGS)" cargo build --release --manifest-path fuzz/Cargo.toml --target $(FUZZ_TRIPLE); \
	fi

fuzz: fuzz-build
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/work/$$t fuzz/work/files fuzz/artifacts/$$t || exit 1; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  STOCHSEG_FUZZ_DIR=$(CURDIR)/fuzz/work/files $(FUZZ_BIN)/$$t fuzz/work/$$t fuzz/corpus/$$t \
	    -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
	    -artifact_prefix=fuzz/artifacts/$$t/ 2>fuzz/work/$$t.log \
	    || { tail -n 60 fuzz/work/$$t.log; exit 1; }; \
	  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec)' fuzz/work/$$t.log; \
	done; rm -rf fuzz/work/files

clean:
	cargo clean
	rm -rf $(VENV) out

# benchmark (issue 5): scaling series and the side-by-side with bench/reference.py (minutes)
.PHONY: bench
bench: setup setup-test build
	$(VPY) bench/run.py
