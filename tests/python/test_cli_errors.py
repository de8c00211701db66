"""Failure modes: documented exit codes, one `stochseg: error:` line naming the culprit, and
no output folder (nor a `.<name>.partial-*` staging folder) left behind."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from scipy import ndimage

from conftest import (CASE_DIR, CASE_ID, CHANNELS, DEMO_MODELS, case_channel_paths,
                      error_line, model_path, run_ok, stochseg, write_config)


def identity_model():
    return f"{model_path('identity-plus-one.onnx')}:16x32x32"


def input_args(paths: dict):
    out = []
    for c in CHANNELS:
        out += ["--input", f"{c}={paths[c]}"]
    return out


def assert_fails(tmp_path, code, *args, out_name="out", names=()):
    """Run `stochseg run ... --out tmp_path/results/out_name`, expect exit `code`, one error
    line mentioning every string in `names`, and nothing written beside --out."""
    parent = tmp_path / "results"
    parent.mkdir(exist_ok=True)
    before = set(os.listdir(parent))
    out = parent / out_name
    p = stochseg("run", *args, "--out", out)
    assert p.returncode == code, f"exit {p.returncode}, expected {code}; stderr:\n{p.stderr}"
    line = error_line(p)
    for n in names:
        assert str(n) in line, f"error line does not name {n!r}: {line}"
    after = set(os.listdir(parent))
    leftovers = sorted(after - before)
    assert not leftovers, f"left behind: {leftovers}"
    assert not [x for x in after if x.startswith(f".{out_name}.partial")]
    return line


def test_missing_channel_in_case_folder(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    for c, p in case_channel_paths().items():
        if c != "t2w":
            os.symlink(p, case / p.name)
    line = assert_fails(tmp_path, 3, "--model", identity_model(), "--case", case,
                        names=[case, "t2w"])
    assert "stochseg: error:" in line


def test_missing_channel_file(tmp_path):
    paths = dict(case_channel_paths())
    paths["t2f"] = tmp_path / "nowhere" / f"{CASE_ID}-t2f.nii.gz"
    assert_fails(tmp_path, 3, "--model", identity_model(), *input_args(paths),
                 names=[paths["t2f"]])


def test_unknown_config_key(tmp_path):
    cfg = write_config(tmp_path / "bad.yaml", [model_path("identity-plus-one.onnx")],
                       {"ensemble": {"pases": 3}})
    line = assert_fails(tmp_path, 2, "--pipeline", cfg, "--case", CASE_DIR,
                        names=["pases", "ensemble"])
    assert str(cfg) in line or cfg.name in line


def test_unknown_nested_model_key(tmp_path):
    cfg = write_config(tmp_path / "bad.yaml",
                       [{"path": str(model_path("identity-plus-one.onnx")), "patchsize": [1, 2, 3]}])
    assert_fails(tmp_path, 2, "--pipeline", cfg, "--case", CASE_DIR,
                 names=["patchsize", "models"])


def test_invalid_override_value(tmp_path):
    assert_fails(tmp_path, 2, "--model", identity_model(), "--case", CASE_DIR,
                 "--passes", "0", names=["passes"])


def test_existing_output_is_refused_and_untouched(tmp_path):
    out = tmp_path / "results" / "out"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("precious")
    os.utime(out / "keep.txt", (1_000_000_000, 1_000_000_000))
    p = stochseg("run", "--model", identity_model(), "--case", CASE_DIR, "--deterministic",
                 "--out", out)
    assert p.returncode == 5, p.stderr
    line = error_line(p)
    assert str(out) in line and "--overwrite" in line
    assert sorted(os.listdir(out)) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"
    assert os.stat(out / "keep.txt").st_mtime == 1_000_000_000
    assert sorted(os.listdir(out.parent)) == ["out"]


def test_overwrite_replaces(tmp_path):
    out = tmp_path / "results" / "out"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("old")
    r = run_ok(out, "--model", identity_model(), "--case", CASE_DIR, "--deterministic",
               "--overwrite")
    names = sorted(os.listdir(out))
    assert "keep.txt" not in names and "report.yaml" in names and "labels.nii.gz" in names
    assert sorted(os.listdir(out.parent)) == ["out"], os.listdir(out.parent)
    assert r.report["case"]["id"] == CASE_ID


def test_missing_onnx_runtime(tmp_path):
    lib = "/nonexistent/libonnxruntime.so.1.31.1"
    assert_fails(tmp_path, 4, "--ort-lib", lib, "--model", identity_model(),
                 "--case", CASE_DIR, names=[lib])


def test_model_file_missing(tmp_path):
    m = tmp_path / "absent.onnx"
    assert_fails(tmp_path, 4, "--model", m, "--case", CASE_DIR, names=[m])


def test_model_not_onnx(tmp_path):
    m = tmp_path / "garbage.onnx"
    m.write_bytes(b"this is not a protobuf \x00\xff\x13" * 50)
    assert_fails(tmp_path, 4, "--model", f"{m}:16x32x32", "--case", CASE_DIR, names=[m])


def test_model_with_wrong_channel_count(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 16, 32, 32])
    w = numpy_helper.from_array(np.full((1, 3, 1, 1, 1), 0.5, np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1, 1])
    g = helper.make_graph([node], "three_channels", [x], [y], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    m = tmp_path / "three-channels.onnx"
    onnx.save(model, str(m))
    line = assert_fails(tmp_path, 4, "--model", m, "--case", CASE_DIR, names=[m])
    assert "3" in line and "4" in line and "channel" in line


def test_mismatched_channel_grid(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    for c, p in case_channel_paths().items():
        if c == "t2f":
            img = nib.load(str(p))
            small = ndimage.zoom(img.get_fdata(), 0.5, order=1)
            aff = img.affine.copy()
            aff[:3, :3] *= 2
            out = nib.Nifti1Image(small.astype(np.int16), aff)
            out.set_sform(aff, 1)
            out.set_qform(aff, 1)
            nib.save(out, str(case / p.name))
            bad = case / p.name
        else:
            os.symlink(p, case / p.name)
    assert nib.load(str(bad)).shape != nib.load(str(case_channel_paths()["t1n"])).shape
    assert_fails(tmp_path, 3, "--model", identity_model(), "--case", case,
                 names=[bad, "t2f"])


def test_same_shape_different_affine(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    for c, p in case_channel_paths().items():
        if c == "t1c":
            img = nib.load(str(p))
            aff = img.affine.copy()
            aff[0, 3] += 5.0  # shifted by 5 mm
            out = nib.Nifti1Image(np.asanyarray(img.dataobj), aff, img.header)
            out.set_sform(aff, 1)
            out.set_qform(aff, 1)
            nib.save(out, str(case / p.name))
        else:
            os.symlink(p, case / p.name)
    assert_fails(tmp_path, 3, "--model", identity_model(), "--case", case, names=["t1c"])


@pytest.mark.parametrize("defect", ["all_zero", "nan"])
def test_bad_voxels_rejected(tmp_path, defect):
    case = tmp_path / "case"
    case.mkdir()
    for c, p in case_channel_paths().items():
        if c == "t1c":
            img = nib.load(str(p))
            a = img.get_fdata().astype(np.float32)
            if defect == "all_zero":
                a[:] = 0
            else:
                a[10, 10, 10] = np.nan
            out = nib.Nifti1Image(a, img.affine)
            out.set_sform(img.affine, 1)
            out.set_qform(img.affine, 1)
            nib.save(out, str(case / p.name))
            bad = case / p.name
        else:
            os.symlink(p, case / p.name)
    assert_fails(tmp_path, 3, "--model", identity_model(), "--case", case, names=[bad])


def test_truncated_nifti(tmp_path):
    paths = dict(case_channel_paths())
    t = tmp_path / f"{CASE_ID}-t1n.nii.gz"
    data = paths["t1n"].read_bytes()
    t.write_bytes(data[: len(data) // 3])
    paths["t1n"] = t
    assert_fails(tmp_path, 3, "--model", identity_model(), *input_args(paths), names=[t])


def test_unwritable_output_parent(tmp_path):
    """--out below a regular file cannot be created: output failure, nothing left."""
    blocker = tmp_path / "results" / "file"
    blocker.parent.mkdir()
    blocker.write_text("x")
    p = stochseg("run", "--model", identity_model(), "--case", CASE_DIR, "--deterministic",
                 "--out", blocker / "out")
    assert p.returncode == 5, p.stderr
    error_line(p)
    assert sorted(os.listdir(blocker.parent)) == ["file"]


def test_usage_error_exit_code():
    p = stochseg("run", "--case", CASE_DIR)  # no --out
    assert p.returncode == 2
    p = stochseg("run", "--model", DEMO_MODELS["unet-p32"], "--out", "/tmp/x-never-created")
    assert p.returncode == 2, p.stderr  # neither --case nor --input
    error_line(p)
    assert not os.path.exists("/tmp/x-never-created")


def test_negative_threshold_on_the_command_line(tmp_path):
    """The schema allows thresholds down to -100, so `--threshold -0.5` must be accepted like
    `--threshold=-0.5` (clap rejects values that start with '-' unless told otherwise)."""
    base = ["--model", identity_model(), "--case", CASE_DIR, "--deterministic"]
    with_eq = run_ok(tmp_path / "eq", *base, "--threshold=-0.5")
    assert with_eq.report["thresholds"]["logit"] == -0.5
    p = stochseg("run", *base, "--threshold", "-0.5", "--out", tmp_path / "sep")
    assert p.returncode == 0, (
        f"`--threshold -0.5` exited {p.returncode}: {p.stderr.strip().splitlines()[:1]}")
