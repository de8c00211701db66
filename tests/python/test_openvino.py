"""The OpenVINO execution provider (`--device openvino`, the onnxruntime-ep-openvino plugin that
`make setup` installs), against ONNX Runtime's own CPU provider and the plugin's Python package.

f32 runs on any x86-64 CPU: the same case, seed and passes on both providers must give mean
logits within F32_TOL of each other (OpenVINO orders its sums differently: on the small case
the largest difference is about 3e-5 on logits up to 66) and the same labels and blobs. bf16
runs only where OpenVINO's CPU device lists BF16 (AVX512_BF16 or AMX); elsewhere those tests
skip and say why. The plugin's version and library in the report are checked against the
installed package (importlib.metadata, `onnxruntime_ep_openvino.get_library_path()`), and
whether the CPU has bf16 against what the plugin reports through onnxruntime's Python API.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import (CASE_DIR, check_report_files, error_line, model_path, run_ok, stochseg,
                      write_config)

F32_TOL = 1e-4
# bf16 against f32 (the bounds): label Dice, and each blob's mean logit within 1% of
# max(|f32|, 1)
BF16_DICE_MIN = 0.99
BF16_BLOB_REL_TOL = 0.01
MODELS = ["unet-p32", "unet-p64", "unet-p256"]
# the shared stochastic run of conftest (SPECS["stoch_all"]) on the CPU provider
ARGS = ["--passes", "2", "--seed", "0", "--threads", "2"]
EP_NAME = "OpenVINOExecutionProvider"


def plugin_package():
    import onnxruntime_ep_openvino

    return onnxruntime_ep_openvino


def cpu_capabilities() -> list[str]:
    """OPTIMIZATION_CAPABILITIES of the plugin's CPU device, through onnxruntime's Python API
    (a process of its own: a library registers once per process)."""
    import subprocess
    import sys

    code = (
        "import onnxruntime as ort, onnxruntime_ep_openvino as ov\n"
        "ort.register_execution_provider_library('ov', ov.get_library_path())\n"
        "d = [d for d in ort.get_ep_devices() if d.ep_name == 'OpenVINOExecutionProvider'"
        " and d.ep_metadata.get('ov_device') == 'CPU']\n"
        "print(d[0].ep_metadata.get('OPTIMIZATION_CAPABILITIES', '') if d else '')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.split()


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


BF16 = None


def has_bf16() -> bool:
    global BF16
    if BF16 is None:
        BF16 = "BF16" in cpu_capabilities()
    return BF16


def skip_without_bf16():
    if not has_bf16():
        flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile"}) or ["none"]
        reason = (f"this CPU has no bf16 for OpenVINO (capabilities {' '.join(cpu_capabilities())}; "
                  f"bf16 flags in /proc/cpuinfo: {', '.join(flags)})")
        print(f"skipping: {reason}")
        pytest.skip(reason)


def openvino_config(tmp: Path, name: str, **openvino) -> Path:
    openvino.setdefault("cache_dir", str(tmp / "ov-cache"))
    return write_config(tmp / "configs" / f"{name}.yaml", [model_path(m) for m in MODELS],
                        {"execution": {"providers": ["openvino"], "openvino": openvino}})


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
    """OpenVINO runs of the shared stochastic configuration, at f32 (and bf16 on demand)."""
    tmp = tmp_path_factory.mktemp("openvino")
    made = {}

    def get(precision: str):
        if precision not in made:
            cfg = openvino_config(tmp, precision, precision=precision)
            made[precision] = run_ok(tmp / precision, "--pipeline", cfg, "--case", CASE_DIR,
                                     *ARGS)
        return made[precision]

    return get


def blob_table(r):
    return [(b["voxels"], b["mean_logit"]) for b in r.report["blobs"]]


def test_f32_matches_the_cpu_provider(runs, ov):
    cpu, f32 = runs.get("stoch_all"), ov("f32")
    assert {m["execution_provider"] for m in cpu.report["models"]} == {"CPUExecutionProvider"}
    diff = np.abs(f32.map("mean_logits").astype(np.float64) - cpu.map("mean_logits"))
    assert diff.max() <= F32_TOL, f"max |diff| {diff.max():.2e}, mean {diff.mean():.2e}"
    assert np.abs(f32.map("std_logits") - cpu.map("std_logits")).max() <= F32_TOL
    assert np.array_equal(f32.map("labels"), cpu.map("labels"))
    b_ov, b_cpu = blob_table(f32), blob_table(cpu)
    assert [v for v, _ in b_ov] == [v for v, _ in b_cpu]
    for (_, a), (_, b) in zip(b_ov, b_cpu):
        assert abs(a - b) <= F32_TOL, (a, b)


def test_the_report_names_provider_plugin_and_precision(ov):
    r = ov("f32")
    library = os.path.realpath(plugin_package().get_library_path())
    version = importlib.metadata.version("onnxruntime-ep-openvino")
    assert len(r.report["models"]) == len(MODELS)
    for m in r.report["models"]:
        assert m["execution_provider"] == EP_NAME
        assert m["precision"] == "f32"
        assert os.path.realpath(m["plugin"]["library"]) == library
        # the EP's own version string, e.g. 1.8.1+95d534b.ci.79 for the 1.8.1 wheel
        assert m["plugin"]["version"].split("+")[0] == version, (m["plugin"], version)
    assert r.report["runtime"]["providers_requested"] == ["openvino"]
    placed = [ln for ln in r.proc.stderr.splitlines() if "model placed" in ln]
    assert len(placed) == len(MODELS) and all(EP_NAME in ln for ln in placed), placed


def test_compiled_models_are_cached_per_model_plugin_and_precision(ov, tmp_path):
    cache = tmp_path / "cache"
    cfg = write_config(tmp_path / "p32.yaml", [model_path("unet-p32")],
                       {"execution": {"providers": ["openvino"],
                                      "openvino": {"cache_dir": str(cache)}}})
    args = ["--pipeline", cfg, "--case", CASE_DIR, "--passes", "1", "--threads", "2"]
    run_ok(tmp_path / "a", *args)
    folders = sorted(cache.iterdir())
    assert len(folders) == 1
    manifest = (folders[0] / "stochseg-cache.txt").read_text()
    sha = ov("f32").report["models"][0]["sha256"]
    assert f"model_sha256={sha}" in manifest and "precision=f32" in manifest
    assert "plugin_version=" in manifest and "threads=2" in manifest
    blobs = sorted(folders[0].glob("*.blob"))
    assert blobs, f"OpenVINO wrote no compiled model into {folders[0]}"
    stamp = [(b.name, b.stat().st_mtime_ns) for b in blobs]
    # a second run loads the compiled model: the same folder, the blob untouched
    again = run_ok(tmp_path / "b", *args)
    assert sorted(cache.iterdir()) == folders
    assert [(b.name, b.stat().st_mtime_ns) for b in sorted(folders[0].glob("*.blob"))] == stamp
    assert np.array_equal(again.map("mean_logits"),
                          run_ok(tmp_path / "c", *args).map("mean_logits"))
    # other threads (or precision, plugin, model) give another folder
    run_ok(tmp_path / "d", *args[:-1], "1")
    assert len(list(cache.iterdir())) == 2


def test_bf16_agrees_with_f32(ov):
    skip_without_bf16()
    f32, bf16 = ov("f32"), ov("bf16")
    assert {m["precision"] for m in bf16.report["models"]} == {"bf16"}
    a, b = f32.map("labels") > 0, bf16.map("labels") > 0
    dice = 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
    assert dice >= BF16_DICE_MIN, dice
    big = [(v, m) for v, m in blob_table(f32) if v >= 50]
    matched = {v: m for v, m in blob_table(bf16)}
    for voxels, mean_logit in big:
        # blobs are matched by overlap in the bench; here the few blobs of the small case keep
        # their order and sizes within 5%
        near = [m for v, m in matched.items() if abs(v - voxels) <= 0.05 * voxels]
        assert near, (voxels, blob_table(bf16))
        assert min(abs(m - mean_logit) for m in near) <= BF16_BLOB_REL_TOL * max(abs(mean_logit), 1)


def test_bf16_is_refused_where_the_cpu_lacks_it(tmp_path):
    if has_bf16():
        reason = "this CPU has bf16 (OpenVINO lists BF16): nothing to refuse"
        print(f"skipping: {reason}")
        pytest.skip(reason)
    out = tmp_path / "out"
    p = stochseg("run", "--model", model_path("unet-p32"), "--case", CASE_DIR, "--passes", "1",
                 "--device", "openvino", "--precision", "bf16", "--out", out)
    assert p.returncode == 4, p.stderr
    assert "no bf16" in error_line(p)
    assert not out.exists()


def test_a_missing_plugin_is_exit_4_naming_the_places_tried(tmp_path):
    model = ["--model", model_path("unet-p32"), "--case", CASE_DIR, "--passes", "1"]
    # the configured library
    cfg = write_config(tmp_path / "c.yaml", [model_path("unet-p32")],
                       {"execution": {"providers": ["openvino"],
                                      "openvino": {"library": "/nonexistent/ov-plugin.so"}}})
    out = tmp_path / "out"
    p = stochseg("run", "--pipeline", cfg, "--case", CASE_DIR, "--passes", "1", "--out", out)
    assert p.returncode == 4, p.stderr
    line = error_line(p)
    assert "/nonexistent/ov-plugin.so (execution.openvino.library)" in line, line
    assert "make setup" in line and "--device cpu" in line, line
    assert not out.exists()
    # the environment variable
    p = stochseg("run", *model, "--device", "openvino", "--out", out,
                 extra_env={"STOCHSEG_OPENVINO_PLUGIN": "/nonexistent/env-plugin.so"})
    assert p.returncode == 4, p.stderr
    assert "/nonexistent/env-plugin.so (STOCHSEG_OPENVINO_PLUGIN)" in error_line(p)
    # beside an ONNX Runtime whose site-packages has no plugin
    import onnxruntime

    capi = tmp_path / "site-packages" / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    lib = next(Path(onnxruntime.__file__).parent.joinpath("capi").glob("libonnxruntime.so.*"))
    (capi / lib.name).symlink_to(lib)
    p = stochseg("--ort-lib", capi / lib.name, "run", *model, "--device", "openvino",
                 "--out", out)
    assert p.returncode == 4, p.stderr
    line = error_line(p)
    expected = tmp_path / "site-packages" / "onnxruntime_ep_openvino"
    assert f"{expected}/" in line and "beside the loaded ONNX Runtime" in line, line
    assert not out.exists()


def test_fallback_from_a_missing_plugin_is_logged_and_reported(tmp_path):
    p = stochseg("run", "--model", model_path("unet-p32"), "--case", CASE_DIR, "--passes", "1",
                 "--device", "openvino", "--allow-fallback", "--out", tmp_path / "out",
                 extra_env={"STOCHSEG_OPENVINO_PLUGIN": "/nonexistent/env-plugin.so",
                            "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr
    assert "falling back" in p.stderr and EP_NAME in p.stderr
    check_report_files(tmp_path / "out")
    m = json.loads((tmp_path / "out" / "report.json").read_text())["models"][0]
    assert m["execution_provider"] == "CPUExecutionProvider" and "plugin" not in m


def test_the_environment_variable_names_the_plugin_and_logs_stay_json(tmp_path):
    library = plugin_package().get_library_path()
    out = tmp_path / "out"
    p = stochseg("--log-format", "json", "run", "--model", model_path("unet-p32"), "--case",
                 CASE_DIR, "--passes", "1", "--device", "openvino", "--out", out,
                 extra_env={"STOCHSEG_OPENVINO_PLUGIN": library,
                            "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr
    for line in p.stderr.splitlines():
        assert isinstance(json.loads(line), dict), line
    check_report_files(out)
    m = json.loads((out / "report.json").read_text())["models"][0]
    assert m["plugin"]["library"] == library


def test_precision_needs_the_openvino_provider(tmp_path):
    p = stochseg("run", "--model", model_path("unet-p32"), "--case", CASE_DIR, "--device", "cpu",
                 "--precision", "bf16", "--out", tmp_path / "out")
    assert p.returncode == 2, p.stderr
    assert "--device openvino" in error_line(p)


def test_validate_puts_the_models_on_openvino(tmp_path):
    p = stochseg("validate", "--model", model_path("unet-p32"), "--device", "openvino",
                 "--format", "yaml", extra_env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert p.returncode == 0, p.stderr
    assert EP_NAME in p.stdout and "f32" in p.stdout


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_same_seed_same_bytes_whatever_the_threads(tmp_path, precision):
    if precision == "bf16":
        skip_without_bf16()
    cfg = write_config(tmp_path / "p32.yaml", [model_path("unet-p32")],
                       {"execution": {"providers": ["openvino"],
                                      "openvino": {"precision": precision,
                                                   "cache_dir": str(tmp_path / "cache")}}})
    outs = [run_ok(tmp_path / f"t{t}-{i}", "--pipeline", cfg, "--case", CASE_DIR, "--passes", "2",
                   "--seed", "5", "--threads", str(t)) for i, t in enumerate([2, 2, 1])]
    for name in ("mean_logits.nii.gz", "std_logits.nii.gz", "labels.nii.gz"):
        first = (outs[0].out / name).read_bytes()
        assert all((o.out / name).read_bytes() == first for o in outs[1:]), name
