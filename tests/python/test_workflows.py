"""The step under workflow engines, for real: Snakemake (pipelines/snakemake), CWL under cwltool
(pipelines/cwl, --no-container) and `make` (pipelines/batch.mk), each on two small cases copied
from case-small under new case ids, with a fast config (unet-p32, 2 passes). Every engine's
reports must validate against the schema and find as many blobs as a direct run; make must re-run
only what changed and carry on past a failing case; `stochseg summarize` must list them all.

Each test runs twice: with the checkout's workflow files and binary (named by path, ONNX Runtime
through ORT_DYLIB_PATH), and with an installed tree (`make install`, then moved): its copies of
the workflow files, `stochseg` by name on PATH, nothing else in the environment (`env -i
PATH=/usr/bin:/bin:PREFIX/bin`), the engines started by their full path; there every report must
name the tree's own ONNX Runtime library."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (BIN, CASE_DIR, CASE_ID, CHANNELS, ROOT, check_report_files, clean_env, env,
                      load_yaml, model_path, run_ok, write_config)

CASE_IDS = ("WF-00001-000", "WF-00002-000")
VENV_BIN = Path(sys.executable).parent


def make_case(cohort: Path, case_id: str) -> Path:
    """A copy of case-small named `case_id` (the case id is the files' prefix)."""
    d = cohort / case_id
    d.mkdir(parents=True)
    for c in CHANNELS:
        shutil.copyfile(CASE_DIR / f"{CASE_ID}-{c}.nii.gz", d / f"{case_id}-{c}.nii.gz")
    return d


def fast_config(path: Path) -> Path:
    return write_config(path, [model_path("unet-p32")], {"ensemble": {"passes": 2}})


def tool(name: str) -> str:
    """An engine's command from the venv that runs the tests (or PATH); fails if missing."""
    found = VENV_BIN / name
    if found.exists():
        return str(found)
    which = shutil.which(name)
    if not which:
        pytest.fail(f"{name} not installed (tests/python/requirements.txt)", pytrace=False)
    return which


def engine_env() -> dict:
    e = env()
    e["PATH"] = f"{BIN.parent}{os.pathsep}{VENV_BIN}{os.pathsep}{e.get('PATH', '')}"
    return e


def run_engine(cmd, cwd: Path, timeout: float = 600,
               environment: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=environment or engine_env(),
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class Flavour:
    """Where the workflow files and the binary come from."""

    name: str
    workflows: Path  # holding batch.mk, snakemake/, cwl/
    bin: str  # how the workflows are told the binary
    environment: dict
    prefix: Path | None = None  # the installed tree

    def run(self, cmd, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
        return run_engine(cmd, cwd, timeout, self.environment)

    def check_runtime(self, folders) -> None:
        """An installed tree's runs use its own ONNX Runtime library."""
        if self.prefix is None:
            return
        for folder in folders:
            lib = json.loads((Path(folder) / "report.json").read_text())["runtime"][
                "onnxruntime_library"]
            assert Path(lib).parent == self.prefix / "lib" / "stochseg", (folder, lib)


@pytest.fixture(params=["in-tree", "installed"])
def flavour(request) -> Flavour:
    if request.param == "in-tree":
        return Flavour("in-tree", ROOT / "pipelines", str(BIN), engine_env())
    prefix = request.getfixturevalue("installed")
    return Flavour("installed", prefix / "share" / "stochseg" / "workflows", "stochseg",
                   clean_env(prefix), prefix)


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    """The reference: the same config run directly on case-small."""
    tmp = tmp_path_factory.mktemp("direct")
    return run_ok(tmp / "out", "--pipeline", fast_config(tmp / "fast.yaml"), "--case", CASE_DIR)


def check_case_outputs(folders: dict, direct) -> None:
    """Each case folder holds a schema-valid report with the direct run's blobs."""
    assert set(folders) == set(CASE_IDS), folders
    for case_id, folder in folders.items():
        folder = Path(folder)
        assert (folder / "report.yaml").is_file(), f"{folder}: no report.yaml"
        check_report_files(folder)
        report = json.loads((folder / "report.json").read_text())
        assert report["case"]["id"] == case_id
        assert report["ensemble"]["total_passes"] == 2
        assert len(report["blobs"]) == len(direct.report["blobs"]), folder
        for ours, ref in zip(report["blobs"], direct.report["blobs"]):
            assert ours["voxels"] == ref["voxels"]


def read_summary(out: Path) -> dict:
    with open(out / "cohort-summary.csv", newline="") as f:
        rows = {r["folder"]: r for r in csv.DictReader(f)}
    return {"rows": rows, "yaml": load_yaml((out / "cohort-summary.yaml").read_text())}


def check_summary(out: Path, direct, ok=CASE_IDS, failed=()) -> dict:
    s = read_summary(out)
    assert set(s["rows"]) == set(ok) | set(failed), s["rows"].keys()
    for name in ok:
        row = s["rows"][name]
        assert row["status"] == "ok" and int(row["blobs"]) == len(direct.report["blobs"]), row
    for name in failed:
        assert s["rows"][name]["status"] == "failed"
    totals = s["yaml"]["totals"]
    assert (totals["ok"], totals["failed"]) == (len(ok), len(failed))
    assert totals["blobs"] == len(ok) * len(direct.report["blobs"])
    return s


# --------------------------------------------------------------------------------------------
# Snakemake
# --------------------------------------------------------------------------------------------
def test_snakemake_one_job_per_case(tmp_path, direct, flavour):
    cohort = tmp_path / "cohort"
    for c in CASE_IDS:
        make_case(cohort, c)
    out = tmp_path / "results"
    cfg = tmp_path / "snakemake.yaml"
    settings = {"cases_dir": str(cohort), "out_dir": str(out),
                "pipeline": str(fast_config(tmp_path / "fast.yaml")), "args": "", "threads": 1,
                "mem_mb": 0, "mem_margin_mb": 100}
    if flavour.prefix is None:
        settings["stochseg"] = flavour.bin  # installed: the config's default, by name
    cfg.write_text(json.dumps(settings))
    cmd = [tool("snakemake"), "-s", flavour.workflows / "snakemake" / "Snakefile",
           "--configfile", cfg, "--cores", "2", "--directory", tmp_path]
    p = flavour.run(cmd, tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    check_case_outputs({c: out / c for c in CASE_IDS}, direct)
    flavour.check_runtime(out / c for c in CASE_IDS)
    check_summary(out, direct)
    # each job asked for the memory `stochseg validate` expects (MiB -> MB), plus the config's
    # margin for the Snakemake processes of a cluster job
    est = load_yaml(flavour.run([flavour.bin, "-q", "validate", "--pipeline",
                                 tmp_path / "fast.yaml", "--case", cohort / CASE_IDS[0],
                                 "--format", "yaml"], tmp_path).stdout)["estimate"][
        "peak_memory_mib"]
    asked = re.findall(r"rule segment:.*?mem_mb=(\d+)", p.stdout + p.stderr, re.S)
    assert len(asked) == len(CASE_IDS), asked
    assert all(int(a) == math.ceil(est * 1.048576) + 100 for a in asked), asked
    # JSON logs of each job
    for c in CASE_IDS:
        lines = (out / ".logs" / f"{c}.log").read_text().splitlines()
        assert lines and all(json.loads(ln)["level"] for ln in lines)
    # nothing to do the second time
    again = flavour.run(cmd, tmp_path)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


# --------------------------------------------------------------------------------------------
# CWL
# --------------------------------------------------------------------------------------------
def cwltool(flavour: Flavour) -> list:
    """cwltool without a container; the checkout's binary needs ORT_DYLIB_PATH kept."""
    keep = ["--preserve-environment", "ORT_DYLIB_PATH"] if flavour.prefix is None else []
    return [tool("cwltool"), "--no-container", *keep]


def test_cwl_workflow_scatters_over_cases(tmp_path, direct, flavour):
    cohort = tmp_path / "cohort"
    dirs = [make_case(cohort, c) for c in CASE_IDS]
    fast = fast_config(tmp_path / "fast.yaml")
    job = {
        "cases": [{"class": "Directory", "path": str(d)} for d in dirs],
        "pipeline": {"class": "File", "path": str(fast)},
        "models": [{"class": "File", "path": str(model_path("unet-p32"))}],
        "passes": 2,
        "threads": 1,
    }
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job))
    out = tmp_path / "cwl-out"
    p = flavour.run([*cwltool(flavour), "--outdir", out, flavour.workflows / "cwl" / "cohort.cwl",
                     job_file], tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    result = json.loads(p.stdout)
    folders = {Path(d["path"]).name: d["path"] for d in result["case_outputs"]}
    check_case_outputs(folders, direct)
    flavour.check_runtime(folders.values())
    assert [Path(r["path"]).name for r in result["reports"]] == ["report.yaml"] * 2
    for log in result["logs"]:
        assert all(json.loads(ln)["level"] for ln in Path(log["path"]).read_text().splitlines())
    assert Path(result["summary_csv"]["path"]).parent == out
    check_summary(out, direct)


def test_cwl_tool_alone(tmp_path, direct, flavour):
    case = make_case(tmp_path / "cohort", CASE_IDS[0])
    out = tmp_path / "cwl-out"
    tool_file = flavour.workflows / "cwl" / "stochseg-run.cwl"
    p = flavour.run([*cwltool(flavour), "--outdir", out, tool_file, "--case_dir", case,
                     "--models", model_path("unet-p32"), "--passes", "2"], tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    result = json.loads(p.stdout)
    folder = Path(result["case_out"]["path"])
    check_report_files(folder)
    assert len(json.loads((folder / "report.json").read_text())["blobs"]) == len(
        direct.report["blobs"])
    flavour.check_runtime([folder])
    if flavour.prefix is None:
        return
    # a shipped pipeline by name: no file to stage, its models come with the installation
    p = flavour.run([*cwltool(flavour), "--outdir", tmp_path / "by-name", tool_file,
                     "--case_dir", case, "--pipeline_name", "brats-goat-deterministic"], tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    folder = Path(json.loads(p.stdout)["case_out"]["path"])
    check_report_files(folder)
    report = json.loads((folder / "report.json").read_text())
    shipped = flavour.prefix / "share" / "stochseg" / "pipelines"
    assert report["pipeline"] == {"name": "brats-goat-deterministic", "source": "name",
                                  "config": str(shipped / "brats-goat-deterministic.yaml")}
    assert report["ensemble"]["mode"] == "deterministic"


# --------------------------------------------------------------------------------------------
# make
# --------------------------------------------------------------------------------------------
def make_batch(flavour: Flavour, cases: Path, out: Path, cfg: Path,
               *extra) -> subprocess.CompletedProcess:
    """batch.mk; the checkout's from the checkout with BIN, an installed one with `stochseg` on
    PATH from the cohort's folder."""
    binary = [f"BIN={flavour.bin}"] if flavour.prefix is None else []
    cwd = ROOT if flavour.prefix is None else cases.parent
    return flavour.run(["make", "--no-print-directory", "-f", flavour.workflows / "batch.mk",
                        f"CASES={cases}", f"OUT={out}", f"PIPELINE={cfg}", *binary,
                        "THREADS=1", *extra], cwd)


def ran(p: subprocess.CompletedProcess) -> set:
    """Cases a `make batch` run ran (its `ok <case>` / `FAILED <case>` lines)."""
    return set(re.findall(r"^(?:ok|FAILED) +(\S+)", p.stdout, re.M))


def test_make_batch_reruns_only_what_changed_and_survives_a_failure(tmp_path, direct, flavour):
    cohort = tmp_path / "cohort"
    for c in CASE_IDS:
        make_case(cohort, c)
    bad = make_case(cohort, "BAD-00003-000")
    broken = bad / "BAD-00003-000-t2w.nii.gz"
    broken.write_bytes(broken.read_bytes()[:1000])  # truncated: exit 3
    out = tmp_path / "results"
    model = tmp_path / "models" / "unet-p32.onnx"
    model.parent.mkdir()
    shutil.copyfile(model_path("unet-p32"), model)
    cfg = write_config(tmp_path / "fast.yaml", [model], {"ensemble": {"passes": 2}})

    p = make_batch(flavour, cohort, out, cfg, "-j", "2")
    assert p.returncode != 0, "a failed case must fail the batch"
    assert ran(p) == set(CASE_IDS) | {"BAD-00003-000"}
    check_case_outputs({c: out / c for c in CASE_IDS}, direct)
    flavour.check_runtime(out / c for c in CASE_IDS)
    assert not (out / "BAD-00003-000").exists()
    marker = (out / ".logs" / "BAD-00003-000.failed").read_text()
    assert "exit_code: 3" in marker and "file is truncated" in marker, marker
    assert re.search(r"FAILED BAD-00003-000 \(exit 3\): stochseg: error: .*truncated", p.stderr)
    assert "3 cases, 2 ok, 1 failed" in p.stderr
    s = check_summary(out, direct, failed=["BAD-00003-000"])
    assert s["rows"]["BAD-00003-000"]["exit_code"] == "3"
    assert "truncated" in s["rows"]["BAD-00003-000"]["error"]

    # repair the bad case and touch one good case's input: only those two run again
    # (times set in the past: inputs and config, then the reports, then the touched input)
    shutil.copyfile(CASE_DIR / f"{CASE_ID}-t2w.nii.gz", broken)
    now = time.time()
    for f in [*cohort.rglob("*.nii.gz"), cfg, model]:
        os.utime(f, (now - 300, now - 300))
    for f in out.glob("*/report.yaml"):
        os.utime(f, (now - 200, now - 200))
    os.utime(cohort / CASE_IDS[0] / f"{CASE_IDS[0]}-t1c.nii.gz", (now - 100, now - 100))
    second = out / CASE_IDS[1] / "report.yaml"
    kept = second.stat().st_mtime_ns
    p = make_batch(flavour, cohort, out, cfg, "-j", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    assert ran(p) == {CASE_IDS[0], "BAD-00003-000"}
    assert second.stat().st_mtime_ns == kept
    assert not (out / ".logs" / "BAD-00003-000.failed").exists()
    check_summary(out, direct, ok=CASE_IDS + ("BAD-00003-000",))

    # up to date: nothing runs; a newer model, or a newer config, re-runs every case
    p = make_batch(flavour, cohort, out, cfg)
    assert p.returncode == 0 and ran(p) == set()
    for f in (model, cfg):
        f.touch()
        p = make_batch(flavour, cohort, out, cfg, "-j", "2", "-n")
        assert p.returncode == 0
        assert p.stdout.count("--overwrite") == 3, (f, p.stdout)
        os.utime(f, (now - 300, now - 300))


def test_make_batch_refuses_a_bad_config_before_running(tmp_path, flavour):
    cohort = tmp_path / "cohort"
    make_case(cohort, CASE_IDS[0])
    cfg = write_config(tmp_path / "bad.yaml", [model_path("unet-p32")], {"ensemble": {"passes": 0}})
    p = make_batch(flavour, cohort, tmp_path / "results", cfg)
    assert p.returncode != 0
    assert "validate" in p.stderr and "failed" in p.stderr, p.stderr
    assert not (tmp_path / "results").exists()
