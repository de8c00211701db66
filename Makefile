# stochseg — the two commands a fresh machine needs:
#   make demo   installs ONNX Runtime (PyPI wheel) into .venv, builds, runs the demo case
#   make test   the same setup, then every test (Rust unit + integration, Python cross-checks)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
BIN := target/release/stochseg
ORT_VERSION := 1.31.1
DEMO_CASE := demo/BraTS-DEMO-00000-000
DEMO_OUT ?= out/demo
# newest libonnxruntime.so.* of the venv's onnxruntime wheel (evaluated when a recipe runs)
ORT_LIB = $(lastword $(sort $(wildcard $(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*)))
export ORT_DYLIB_PATH = $(abspath $(ORT_LIB))

.PHONY: setup build demo test test-rust test-python lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet onnxruntime==$(ORT_VERSION) -r tests/python/requirements.txt
	touch $@

build:
	cargo build --release --locked

demo: setup build
	$(BIN) run --pipeline pipelines/brats-goat-stochastic.yaml --case $(DEMO_CASE) --out $(DEMO_OUT) --overwrite
	@echo "demo report: $(DEMO_OUT)/report.yaml"

test: setup build test-rust test-python

test-rust:
	cargo test --release --locked

test-python:
	$(VPY) -m pytest -q tests/python

lint:
	cargo fmt --all -- --check
	cargo clippy --release --all-targets -- -D warnings

clean:
	cargo clean
	rm -rf $(VENV) out
