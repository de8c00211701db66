"""`stochseg validate --case` sizes a scheduler request: its expected peak memory must bound the
peak RSS of the real run from above, within about 2x, and its expected output size must bound
the output folder. Only headers are read (a case whose voxel data is truncated still gets its
estimate), and a DICOM case gets the same grid and estimate as its NIfTI twin."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import (CASE_DIR, CASE_ID, CHANNELS, ROOT, FIXTURES, error_line, load_yaml,
                      model_path, require, stochseg)

MIB = 1 << 20


def estimate(*args) -> dict:
    p = stochseg("validate", *args, "--format", "yaml")
    assert p.returncode == 0, p.stderr
    return load_yaml(p.stdout)


def peak_rss_run(out: Path, *args) -> int:
    """Runs `stochseg run` and returns its own peak RSS in bytes, as the report records it
    (VmHWM: the child's ru_maxrss would include the pytest process's pages forked before
    exec)."""
    # subprocess.run's timeout kills a run that hangs and fails the test
    proc = stochseg("-q", "run", *args, "--case", CASE_DIR, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return int(json.loads((out / "report.json").read_text())["peak_rss_mib"] * MIB)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


CONFIGS = {
    "p32": ["--model", "unet-p32", "--passes", "2"],
    "p256": ["--model", "unet-p256", "--passes", "2"],
    "three_models": ["--pipeline", ROOT / "pipelines" / "brats-goat-stochastic.yaml",
                     "--passes", "2"],
}


def resolve(args):
    return [model_path(a) if a in ("unet-p32", "unet-p256") else a for a in args]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_estimate_bounds_the_real_run(tmp_path, name):
    args = resolve(CONFIGS[name]) + ["--threads", "2"]
    doc = estimate(*args, "--case", CASE_DIR)
    e = doc["estimate"]
    assert doc["case"]["id"] == CASE_ID and doc["case"]["shape_ijk"] == [96, 112, 48]
    assert e["peak_memory_mib"] == -(-e["peak_memory_bytes"] // MIB)
    assert e["peak_memory_bytes"] == sum(e["memory_parts"].values())
    assert e["output_bytes"] == sum(e["output_parts"].values())
    rss = peak_rss_run(tmp_path / "out", *args)
    ratio = e["peak_memory_bytes"] / rss
    assert 1.0 <= ratio <= 2.0, (
        f"{name}: estimate {e['peak_memory_bytes'] / MIB:.0f} MiB vs peak RSS {rss / MIB:.0f} MiB")
    written = folder_bytes(tmp_path / "out")
    assert written <= e["output_bytes"] <= 4 * written, (written, e["output_bytes"])
    for f in ("mean_logits.nii.gz", "labels.nii.gz", "seg.dcm"):
        assert f in e["output_parts"]


def test_text_output_names_both_figures():
    p = stochseg("validate", "--model", model_path("unet-p32"), "--passes", "2", "--case",
                 CASE_DIR)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert any(ln.startswith("expected peak memory: ") and ln.endswith(" MiB") for ln in lines)
    assert any(ln.startswith("expected output size: ") and ln.endswith(" MiB") for ln in lines)
    assert lines[-1].endswith(": ok")
    # without a case: no estimate
    p = stochseg("validate", "--model", model_path("unet-p32"))
    assert p.returncode == 0 and "expected" not in p.stdout


def test_more_passes_cost_memory_not_output():
    few = estimate("--model", model_path("unet-p32"), "--passes", "2", "--case", CASE_DIR)
    many = estimate("--model", model_path("unet-p32"), "--passes", "30", "--case", CASE_DIR)
    assert many["estimate"]["peak_memory_bytes"] > few["estimate"]["peak_memory_bytes"]
    assert many["estimate"]["output_bytes"] == few["estimate"]["output_bytes"]


def test_only_headers_are_read(tmp_path):
    """Voxel data cut off after the header: `run` refuses the file, `validate` sizes the case."""
    case = tmp_path / "case"
    case.mkdir()
    for c in CHANNELS:
        src = CASE_DIR / f"{CASE_ID}-{c}.nii.gz"
        data = src.read_bytes()
        (case / src.name).write_bytes(data[:2000] if c == "t2w" else data)
    e = estimate("--model", model_path("unet-p32"), "--case", case)
    assert e["case"]["voxels"] == 96 * 112 * 48
    inputs = [f"--input={c}={case / f'{CASE_ID}-{c}.nii.gz'}" for c in CHANNELS]
    assert estimate("--model", model_path("unet-p32"), *inputs)["case"]["id"] == CASE_ID


def test_case_errors_keep_their_exit_codes(tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    for c in CHANNELS[:3]:
        shutil.copyfile(CASE_DIR / f"{CASE_ID}-{c}.nii.gz", case / f"{CASE_ID}-{c}.nii.gz")
    p = stochseg("validate", "--model", model_path("unet-p32"), "--case", case)
    assert p.returncode == 3
    assert "t2f" in error_line(p)
    p = stochseg("validate", "--model", model_path("unet-p32"), "--case", case,
                 "--input", "t1n=x.nii.gz")
    assert p.returncode == 2


def test_dicom_case_gets_the_nifti_estimate(tmp_path):
    import importlib.util

    maker_path = require(FIXTURES / "dicom" / "make_series.py")
    spec = importlib.util.spec_from_file_location("make_series", maker_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_series", module)
    spec.loader.exec_module(module)
    meta = module.make_case(CASE_DIR, tmp_path / "dcm", "plain", "flat", tuple(CHANNELS))
    folder = Path(meta["channels"]["t1n"]["folder"])
    args = ["--model", model_path("unet-p32"), "--passes", "2"]
    dicom = estimate(*args, "--case", folder)
    nifti = estimate(*args, "--case", CASE_DIR)
    assert dicom["case"]["shape_ijk"] == nifti["case"]["shape_ijk"]
    assert dicom["estimate"]["peak_memory_bytes"] == nifti["estimate"]["peak_memory_bytes"]
