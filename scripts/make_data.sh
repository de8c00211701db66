#!/usr/bin/env bash
# Regenerate the shipped synthetic data (demo case and test fixture case).
# Needs python3 with numpy, scipy and nibabel (e.g. the .venv-train of onnx/README.md).
# Output is byte-identical on every run (fixed seeds, gzip mtime 0).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# full-size demo case: 240x240x155 (x, y, z), 1 mm, exactly 2 tumours, 2 simple mimics,
# 2 tumour-like ("hard") mimics, seed 42
$PY scripts/phantom.py --out demo/BraTS-DEMO-00000-000 --case-id BraTS-DEMO-00000-000 \
    --shape 240 240 155 --spacing 1 1 1 --seed 42 --tumors 2 --exact-tumors \
    --false-positive-mimics 2 --hard-mimics 2

# small test case: 96x112x48 (x, y, z), 1 mm, 1-2 tumours, 1 simple + 1 hard mimic, seed 7
$PY scripts/phantom.py --out tests/fixtures/case-small --case-id SMALL-00001-000 \
    --shape 96 112 48 --spacing 1 1 1 --seed 7 --tumors 2 --false-positive-mimics 1 --hard-mimics 1

# test models: conv3, identity-plus-one, fixed-batch1 (needs onnx/unet-p32.onnx),
# pointwise-softmax4, pointwise-regions3, undeclared4, foreign4 (needs onnx/unet4-p32.onnx);
# the demo models in onnx/ themselves come from onnx/train.py (--task wt, classes, regions)
$PY tests/fixtures/models/make_models.py

# golden sliding-window outputs (needs onnxruntime and the models in onnx/)
$PY tests/fixtures/golden/make_golden.py
