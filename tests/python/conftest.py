"""Shared machinery for the stochseg cross-check suite.

The suite runs the built binary (``target/release/stochseg``, or ``$STOCHSEG_BIN``) as a
subprocess and checks what it writes against independent computations (nibabel, numpy,
scipy, onnxruntime's Python API, jsonschema).

* ``stochseg(...)`` runs any subcommand and returns the completed process;
* ``run_ok(out, ...)`` runs ``stochseg run`` that must succeed, and checks every report it
  writes (schema + YAML/JSON agreement) before handing back a :class:`RunOutput`;
* the session fixture ``runs`` builds the expensive shared runs lazily, once per session,
  from the ``SPECS`` table, so several test files reuse them.

Nothing is skipped: a missing precondition (binary, fixture, ONNX Runtime) fails with a message.
"""

from __future__ import annotations

import glob
import json
import os
import queue
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STOCHSEG_BIN", ROOT / "target" / "release" / "stochseg"))
# Fixture root; overridable only to try the suite against a scratch copy of the fixtures.
FIXTURES = Path(os.environ.get("STOCHSEG_FIXTURES_DIR", ROOT / "tests" / "fixtures"))
CASE_DIR = FIXTURES / "case-small"
CASE_ID = "SMALL-00001-000"
CHANNELS = ("t1n", "t1c", "t2w", "t2f")
GOLDEN_DIR = FIXTURES / "golden"
TEST_MODELS = FIXTURES / "models"
DEMO_MODELS = {
    "unet-p32": ROOT / "onnx" / "unet-p32.onnx",
    "unet-p64": ROOT / "onnx" / "unet-p64.onnx",
    "unet-p256": ROOT / "onnx" / "unet-p256.onnx",
}
REPORT_SCHEMA = ROOT / "schemas" / "report.schema.yaml"
MAPS = ("mean_logits", "std_logits", "probability", "labels")
UNCERTAINTY_MAPS = ("entropy", "expected_entropy", "mutual_information", "logit_variance_between",
                    "logit_variance_within")
# libyaml's loader when PyYAML has it (same resolution, ~30x faster on big reports)
_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Yaml12Loader(_BASE_LOADER):
    """PyYAML implements YAML 1.1, whose floats need a dot ("4.0e-8"); YAML 1.2 (what the
    binary's serializer writes) also reads "4e-8" as a float.  This loader adds that form so
    the suite compares report.yaml with report.json by YAML 1.2 rules; test_report_schema
    checks separately that plain YAML 1.1 loaders (yaml.safe_load) read the same data."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str):
    return yaml.load(text, Loader=Yaml12Loader)
NOCROP = {"preprocess": {"crop_to_nonzero": False}}


# --------------------------------------------------------------------------------------------
# preconditions
# --------------------------------------------------------------------------------------------
def require(path: Path, what: str = "fixture") -> Path:
    """Fail (never skip) when a file the suite needs is missing."""
    path = Path(path)
    if not path.exists():
        pytest.fail(f"missing {what}: {path} (see tests/fixtures/*/make_*.py and "
                    f"scripts/make_data.sh)", pytrace=False)
    return path


def ort_library() -> str:
    """Newest libonnxruntime.so.* shipped inside the Python onnxruntime package."""
    import onnxruntime

    capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
    libs = glob.glob(os.path.join(capi, "libonnxruntime.so.*"))
    if not libs:
        pytest.fail(f"no libonnxruntime.so.* in {capi}", pytrace=False)

    def version(p):
        v = p.rsplit("libonnxruntime.so.", 1)[1]
        return tuple(int(x) if x.isdigit() else 0 for x in v.split("."))

    return max(libs, key=version)


ORT_LIB = None


def env() -> dict:
    global ORT_LIB
    if ORT_LIB is None:
        ORT_LIB = ort_library()
    e = dict(os.environ)
    e["ORT_DYLIB_PATH"] = ORT_LIB
    e.pop("STOCHSEG_LOG", None)
    e.pop("SLURM_CPUS_PER_TASK", None)
    return e


# --------------------------------------------------------------------------------------------
# running the binary
# --------------------------------------------------------------------------------------------
TIMINGS: list[tuple[str, float]] = []
REPORTS_CHECKED: list[Path] = []


def stochseg(*args, timeout: float = 300, cwd: Path | None = None,
             extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the binary with `args` (str/Path) and return the completed process (text mode)."""
    if not BIN.is_file():
        pytest.fail(f"stochseg binary not found at {BIN}; run `cargo build --release`",
                    pytrace=False)
    e = env()
    if extra_env:
        e.update(extra_env)
    cmd = [str(BIN)] + [str(a) for a in args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=str(cwd or ROOT), env=e, capture_output=True, text=True,
                          timeout=timeout)
    TIMINGS.append((" ".join(str(a) for a in args[:1] + args[-2:]), time.monotonic() - t0))
    return proc


class Watched:
    """A binary started in the background whose stderr a helper thread reads line by line, so
    that every wait on it has a deadline: a run that hangs without writing a word fails the
    test (and is killed) instead of blocking it."""

    def __init__(self, args, extra_env: dict | None = None):
        e = env()
        e.update(extra_env or {})
        self.proc = subprocess.Popen([str(BIN)] + [str(a) for a in args], env=e,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.seen: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self._lines.put(line)
        self._lines.put(None)  # end of stderr

    def _fail(self, what: str) -> None:
        self.proc.kill()
        self.proc.wait()
        pytest.fail(f"{what}; stderr so far:\n{''.join(self.seen)[-3000:]}", pytrace=False)

    def wait_for_line(self, marker: str, timeout: float) -> list[str]:
        """Waits until a stderr line contains `marker`; fails when none comes within `timeout`
        seconds (also while the binary writes nothing) or stderr ends first."""
        end = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                self._fail(f"no {marker!r} on stderr within {timeout} s")
            if line is None:
                self._fail(f"the run ended before {marker!r}")
            self.seen.append(line)
            if marker in line:
                return self.seen

    def finish(self, timeout: float) -> tuple[str, str]:
        """Waits for the exit with a deadline; returns (stdout, all of stderr)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._fail(f"the run did not end within {timeout} s")
        while (line := self._lines.get(timeout=timeout)) is not None:
            self.seen.append(line)
        return self.proc.stdout.read(), "".join(self.seen)


def write_config(path: Path, models, extra: dict | None = None) -> Path:
    """Write a pipeline YAML with `models` (paths or dicts) merged with `extra`."""
    cfg = {"models": [m if isinstance(m, dict) else {"path": str(m)} for m in models]}
    for k, v in (extra or {}).items():
        cfg[k] = v
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def load_nifti(path: Path):
    import nibabel as nib

    return nib.load(str(path))


@dataclass
class RunOutput:
    """A finished, successful `stochseg run`."""

    out: Path
    proc: subprocess.CompletedProcess
    args: tuple = ()
    seconds: float = 0.0
    _maps: dict = field(default_factory=dict)

    @cached_property
    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text())

    @cached_property
    def report_yaml(self) -> dict:
        return load_yaml((self.out / "report.yaml").read_text())

    def path(self, name: str) -> Path:
        return self.out / (name if name.endswith(".gz") or "." in name else f"{name}.nii.gz")

    def img(self, name: str):
        return load_nifti(self.path(name))

    def map(self, name: str) -> np.ndarray:
        """float32 map (or int labels) in nibabel's (i, j, k) order; cached."""
        if name not in self._maps:
            img = self.img(name)
            if name == "labels":
                self._maps[name] = np.asarray(img.dataobj)
            else:
                self._maps[name] = img.get_fdata(dtype=np.float32)
        return self._maps[name]


_VALIDATOR = None


def report_validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        import jsonschema

        schema = yaml.safe_load(require(REPORT_SCHEMA, "report schema").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        _VALIDATOR = jsonschema.Draft202012Validator(schema)
    return _VALIDATOR


def check_report_files(out: Path) -> None:
    """Every report the suite produces must validate and YAML must equal JSON."""
    data = json.loads((out / "report.json").read_text())
    errors = sorted(report_validator().iter_errors(data), key=lambda e: list(e.path))
    assert not errors, f"{out}/report.json does not validate: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
    ydata = load_yaml((out / "report.yaml").read_text())
    assert ydata == data, f"{out}: report.yaml and report.json differ: " + "; ".join(
        differences(data, ydata)[:5])
    REPORTS_CHECKED.append(out)


def differences(a, b, path="") -> list[str]:
    """Paths where two parsed documents differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += differences(a.get(k), b.get(k), f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += differences(x, y, f"{path}/{i}")
        return out
    same = a == b and (type(a) is type(b) or {type(a), type(b)} <= {int, float})
    return [] if same else [f"{path}: {a!r} vs {b!r}"]


def run_ok(out: Path, *args, timeout: float = 300, check_report: bool = True,
           cwd: Path | None = None) -> RunOutput:
    """`stochseg run ... --out OUT`, which must succeed; returns its RunOutput."""
    t0 = time.monotonic()
    proc = stochseg("run", *args, "--out", out, timeout=timeout, cwd=cwd)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, (
        f"stochseg run {' '.join(map(str, args))} exited {proc.returncode}\n"
        f"stderr:\n{proc.stderr[-4000:]}")
    out = Path(out) if Path(out).is_absolute() else (cwd or ROOT) / out
    assert proc.stdout.strip().endswith("report.yaml"), proc.stdout
    if check_report:
        check_report_files(out)
    return RunOutput(out=out, proc=proc, args=tuple(args), seconds=seconds)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The single `stochseg: error:` line of a failed run (asserting there is exactly one,
    that it is the last thing on stderr, and nothing follows it)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("stochseg: error:")]
    assert len(errs) == 1, f"expected one 'stochseg: error:' line, stderr was:\n{proc.stderr}"
    assert lines[-1] == errs[0], f"the error line is not the last line of stderr:\n{proc.stderr}"
    return errs[0]


def case_args(case_dir: Path = None):
    return ["--case", case_dir or CASE_DIR]


# --------------------------------------------------------------------------------------------
# independent computations on the inputs
# --------------------------------------------------------------------------------------------
def case_channel_paths(case_dir: Path = None, case_id: str = CASE_ID) -> dict:
    d = case_dir or CASE_DIR
    return {c: require(d / f"{case_id}-{c}.nii.gz") for c in CHANNELS}


def load_channels(case_dir: Path = None, case_id: str = CASE_ID) -> np.ndarray:
    """float64 [c, i, j, k] with nibabel scaling applied."""
    paths = case_channel_paths(case_dir, case_id)
    return np.stack([load_nifti(paths[c]).get_fdata(dtype=np.float64) for c in CHANNELS])


def brain_mask(channels: np.ndarray) -> np.ndarray:
    return np.any(channels != 0, axis=0)


def zscore(channels: np.ndarray) -> np.ndarray:
    """Per channel (x - mean) / std (population) over the brain mask, 0 outside, float64."""
    mask = brain_mask(channels)
    out = np.zeros_like(channels, dtype=np.float64)
    for c in range(channels.shape[0]):
        v = channels[c][mask]
        out[c][mask] = (v - v.mean()) / max(v.std(), 1e-8)
    return out


def bounding_box(mask: np.ndarray):
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def lps_affine(ras_affine: np.ndarray) -> np.ndarray:
    a = np.array(ras_affine, dtype=np.float64)
    a[0, :] *= -1
    a[1, :] *= -1
    return a


# --------------------------------------------------------------------------------------------
# shared runs
# --------------------------------------------------------------------------------------------
def model_path(name: str) -> Path:
    if name in DEMO_MODELS:
        return require(DEMO_MODELS[name], "demo model")
    return require(TEST_MODELS / name, "test model")


# name -> (models, config extras, extra command-line args)
SPECS = {
    # golden comparisons: deterministic, crop disabled
    "det_nocrop_p32": (["unet-p32"], NOCROP, ["--deterministic"]),
    "det_nocrop_p64": (["unet-p64"], NOCROP, ["--deterministic"]),
    "det_nocrop_p256": (["unet-p256"], NOCROP, ["--deterministic"]),
    "det_nocrop_all": (["unet-p32", "unet-p64", "unet-p256"], NOCROP, ["--deterministic"]),
    # deterministic, default crop
    "det_crop_all": (["unet-p32", "unet-p64", "unet-p256"], {}, ["--deterministic"]),
    "det_crop_p64": (["unet-p64"], {}, ["--deterministic"]),
    # the shared stochastic 3-model run (blobs, schema, NIfTI checks)
    "stoch_all": (["unet-p32", "unet-p64", "unet-p256"], {},
                  ["--passes", "2", "--seed", "0", "--threads", "2"]),
    # cheaper stochastic config for reproducibility / connectivity / orientation checks
    "p64_s0": (["unet-p64"], {}, ["--passes", "3", "--seed", "0", "--threads", "2",
                                   "--batch-size", "4"]),
    # linear test model
    "conv3_det": (["conv3.onnx"], NOCROP, ["--deterministic"]),
}


class SessionRuns:
    def __init__(self, root: Path):
        self.root = root
        self.cache: dict[str, RunOutput] = {}

    def get(self, name: str) -> RunOutput:
        if name not in self.cache:
            models, extra, args = SPECS[name]
            cfg = write_config(self.root / "configs" / f"{name}.yaml",
                               [model_path(m) for m in models], extra)
            self.cache[name] = run_ok(self.root / name, "--pipeline", cfg, *case_args(), *args)
        return self.cache[name]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> SessionRuns:
    return SessionRuns(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def channels() -> np.ndarray:
    return load_channels()


@pytest.fixture(scope="session")
def reference_img():
    return load_nifti(case_channel_paths()["t1n"])


# --------------------------------------------------------------------------------------------
# DICOM series written by tests/fixtures/dicom/make_series.py
# --------------------------------------------------------------------------------------------
def make_series_module():
    """tests/fixtures/dicom/make_series.py as a module (its FAKE_PATIENT, make_case, ...)."""
    import importlib.util
    import sys

    name = "make_series"
    if name not in sys.modules:
        path = require(FIXTURES / "dicom" / "make_series.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


class DicomSeries:
    """make_series.py variants of the small case, each written once per session."""

    def __init__(self, root: Path):
        self.root = root
        self.cache: dict = {}

    def get(self, variant: str = "plain", channels=CHANNELS, layout: str = "per-channel") -> dict:
        key = (variant, tuple(channels), layout)
        if key not in self.cache:
            out = self.root / f"{variant}-{layout}-{len(channels)}"
            self.cache[key] = make_series_module().make_case(CASE_DIR, out, variant, layout,
                                                             tuple(channels))
        return self.cache[key]


@pytest.fixture(scope="session")
def dicom_series(tmp_path_factory) -> DicomSeries:
    return DicomSeries(tmp_path_factory.mktemp("dicom-series-shared"))


# --------------------------------------------------------------------------------------------
# the installed tool (`make install`, docs/install.md)
# --------------------------------------------------------------------------------------------
def make_install(prefix: Path, target: str = "install") -> subprocess.CompletedProcess:
    """`make install PREFIX=prefix` (or `uninstall`) of this checkout with the suite's binary;
    must succeed."""
    p = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), target,
                        f"PREFIX={prefix}", f"BIN={BIN}"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"make {target} failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}"
    return p


def clean_env(prefix: Path) -> dict:
    """What `env -i PATH=/usr/bin:/bin:PREFIX/bin` leaves: no ORT_DYLIB_PATH, no venv."""
    return {"PATH": f"/usr/bin:/bin:{prefix}/bin"}


def installed_stochseg(prefix: Path, *args, cwd: Path | None = None,
                       timeout: float = 300) -> subprocess.CompletedProcess:
    """`stochseg ARGS` by name, from the installed tree at `prefix`, in a clean environment."""
    cmd = ["env", "-i", *(f"{k}={v}" for k, v in clean_env(prefix).items()), "stochseg",
           *(str(a) for a in args)]
    return subprocess.run(cmd, cwd=str(cwd or ROOT), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Path:
    """A tree installed by `make install` into a temporary prefix and then moved to another
    folder: the prefix it lives at now."""
    base = tmp_path_factory.mktemp("install")
    make_install(base / "prefix")
    moved = base / "moved" / "elsewhere"
    moved.parent.mkdir()
    (base / "prefix").rename(moved)
    return moved


def golden(name: str) -> Path:
    return require(GOLDEN_DIR / name, "golden reference")


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        total = sum(t for _, t in TIMINGS)
        slow = sorted(TIMINGS, key=lambda x: -x[1])[:8]
        terminalreporter.write_line(
            f"stochseg: {len(TIMINGS)} invocations, {total:.1f} s in the binary; "
            f"{len(REPORTS_CHECKED)} reports schema-checked; slowest: "
            + ", ".join(f"{t:.1f}s" for _, t in slow))
