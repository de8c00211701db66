"""Model handling: `inspect` against onnx / onnxruntime's Python view, `validate`, models
whose contract comes from the graph instead of metadata, and patch-size resolution."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

from conftest import (DEMO_MODELS, NOCROP, case_args, error_line, load_channels,
                      model_path, run_ok, stochseg, write_config, zscore)

ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(float16)": "float16"}


def ort_view(path):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def tensors(items):
        out = []
        for t in items:
            out.append({
                "name": t.name,
                "element_type": ORT_TYPES[t.type],
                "shape": [d if isinstance(d, int) and d >= 0 else -1 for d in t.shape],
                "dimension_names": [d if isinstance(d, str) else "" for d in t.shape],
            })
        return out

    return tensors(s.get_inputs()), tensors(s.get_outputs()), s.get_modelmeta().custom_metadata_map


@pytest.mark.parametrize("model", [DEMO_MODELS["unet-p32"], "identity-plus-one.onnx",
                                   "fixed-batch1.onnx", "conv3.onnx"])
def test_inspect_matches_onnxruntime(model):
    path = model_path(model) if isinstance(model, str) else model
    p = stochseg("inspect", path)
    assert p.returncode == 0, p.stderr
    info = yaml.safe_load(p.stdout)
    inputs, outputs, meta = ort_view(path)
    for got, want in ((info["inputs"], inputs), (info["outputs"], outputs)):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g["name"] == w["name"]
            assert g["element_type"] == w["element_type"]
            assert [int(v) for v in g["shape"]] == w["shape"], (g, w)
            names = [str(v) if v is not None else "" for v in g.get("dimension_names", [])]
            # symbolic dimensions keep their names
            for n, wn in zip(names, w["dimension_names"]):
                if wn:
                    assert n == wn, (g, w)
    assert info["metadata"] == meta
    # the ONNX file itself (protobuf view) agrees
    m = onnx.load(str(path))
    assert {p.key: p.value for p in m.metadata_props} == meta
    init = {i.name for i in m.graph.initializer}
    assert [i.name for i in m.graph.input if i.name not in init] == [t["name"] for t in inputs]
    assert [o.name for o in m.graph.output] == [t["name"] for t in outputs]
    if "sha256" in info:
        assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_validate_pipeline_with_relative_model_paths(tmp_path):
    (tmp_path / "models").mkdir()
    for name, p in DEMO_MODELS.items():
        shutil.copy(p, tmp_path / "models" / p.name)
    cfg = write_config(tmp_path / "pipe.yaml", [f"models/{p.name}" for p in DEMO_MODELS.values()],
                       {"name": "relative-paths", "ensemble": {"passes": 2, "sigma": 0.1}})
    p = stochseg("validate", "--pipeline", cfg, cwd=tmp_path.parent)
    assert p.returncode == 0, p.stderr
    for name in DEMO_MODELS:
        assert name in p.stdout
    # a relative path is relative to the config file, not the working directory
    (tmp_path / "sub").mkdir()
    cfg2 = write_config(tmp_path / "sub" / "pipe.yaml", ["models/unet-p32.onnx"])
    p = stochseg("validate", "--pipeline", cfg2, cwd=tmp_path)
    assert p.returncode == 4, p.stdout + p.stderr
    assert str(tmp_path / "sub" / "models" / "unet-p32.onnx") in error_line(p)


def test_fixed_batch_model_equals_unet_p32(runs, tmp_path):
    cfg = write_config(tmp_path / "fb.yaml", [model_path("fixed-batch1.onnx")], NOCROP)
    r = run_ok(tmp_path / "out", "--pipeline", cfg, *case_args(), "--deterministic",
               "--batch-size", "4")
    m = r.report["models"][0]
    assert m["patch_size"] == [16, 32, 32]  # from the input shape: no metadata
    assert m["batch_size"] == 1  # the fixed batch wins over --batch-size 4
    assert m["metadata"] == {}
    ref = runs.get("det_nocrop_p32")
    d = np.abs(r.map("mean_logits").astype(np.float64) - ref.map("mean_logits")).max()
    assert d <= 1e-5, f"fixed-batch1 vs unet-p32: max |diff| {d:.3g}"


@pytest.mark.parametrize("patch", ["16x32x32", "64x128x128", "7x9x11"])
def test_identity_model_gives_normalized_t1n_plus_one(tmp_path, patch):
    """Pointwise model: stitching must reproduce it exactly, whatever the patch (also larger
    than the volume, i.e. padded, and odd sizes that do not tile the volume evenly)."""
    cfg = write_config(tmp_path / "id.yaml", [model_path("identity-plus-one.onnx")], NOCROP)
    r = run_ok(tmp_path / "out", "--pipeline", cfg,
               "--model", f"{model_path('identity-plus-one.onnx')}:{patch}",
               *case_args(), "--deterministic")
    assert r.report["models"][0]["patch_size"] == [int(v) for v in patch.split("x")]
    ch = load_channels()
    expected = zscore(ch)[0] + 1  # 0 + 1 outside the brain
    d = np.abs(r.map("mean_logits").astype(np.float64) - expected)
    assert d.max() <= 1e-5, f"max |diff| {d.max():.3g} at {np.unravel_index(d.argmax(), d.shape)}"
    # channel statistics in the report are the mean / population std over the brain mask
    mask = np.any(ch != 0, axis=0)
    for i, c in enumerate(("t1n", "t1c", "t2w", "t2f")):
        s = r.report["preprocess"]["channel_stats"][c]
        assert s["mean"] == pytest.approx(ch[i][mask].mean(), rel=1e-9)
        assert s["std"] == pytest.approx(ch[i][mask].std(), rel=1e-9)


def test_identity_model_without_patch_size(tmp_path):
    m = model_path("identity-plus-one.onnx")
    out = tmp_path / "out"
    p = stochseg("run", "--model", m, *case_args(), "--out", out)
    assert p.returncode == 4, p.stderr
    line = error_line(p).lower()
    assert "patch size" in line and "unknown" in line, line
    assert not out.exists()
    p = stochseg("validate", "--model", m)
    assert p.returncode == 4
    assert "patch size" in error_line(p).lower()


def test_patch_size_disagreeing_with_metadata(tmp_path):
    p = stochseg("run", "--model", f"{DEMO_MODELS['unet-p32']}:16x64x64", *case_args(),
                 "--out", tmp_path / "out")
    assert p.returncode == 4, p.stderr
    line = error_line(p)
    assert str(DEMO_MODELS["unet-p32"]) in line and "patch" in line
    assert not (tmp_path / "out").exists()
