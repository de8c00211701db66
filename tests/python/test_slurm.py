"""The cohort workflow (pipelines/snakemake) on a real Slurm cluster, through its Slurm profile
(pipelines/snakemake/profiles/slurm, snakemake-executor-plugin-slurm): one node, this machine,
started by tests/slurm/cluster.sh (`.ci/run` does it). Small cases copied from case-small, the
fast config of the workflow tests (unet-p32, 2 passes).

Checked: every job's Slurm request (memory from `stochseg validate` plus the margin, CPUs, time
limit, GPU and partition); the cohort's maps and report numbers equal a local run of the same
workflow with the same seed; a job cancelled with scancel leaves nothing and the rerun runs only
its case; a job over its memory request is killed with Slurm's message in Snakemake's log and
its retry asks for twice as much; a bad case fails its own job with stochseg's exit code while
the others finish; a GPU pipeline's jobs ask for a GPU in the GPU partition.

Without a cluster the tests skip with the reason, unless STOCHSEG_REQUIRE_SLURM=1 (CI): then a
missing cluster fails them."""

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
from pathlib import Path

import numpy as np
import pytest

from conftest import (BIN, CASE_DIR, CASE_ID, ROOT, check_report_files, load_nifti, load_yaml,
                      model_path, stochseg, write_config)
from test_workflows import engine_env, make_case

SNAKEFILE = ROOT / "pipelines" / "snakemake" / "Snakefile"
PROFILE = ROOT / "pipelines" / "snakemake" / "profiles" / "slurm"
# the test cluster has no accounting database: job states from squeue (finished jobs stay
# MinJobAge = 600 s), no account; first status check after 2 s instead of 40
NO_ACCOUNTING = ["--slurm-status-command", "squeue", "--slurm-no-account",
                 "--slurm-init-seconds-before-status-checks", "2"]
CASES = ("SL-00001-000", "SL-00002-000", "SL-00003-000")
SEED = 7
MAPS = ("mean_logits", "std_logits", "probability", "labels")
# report entries that name this run rather than its result
VOLATILE = {"timings_s", "peak_rss_mib", "path", "config", "onnxruntime_library"}
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)")


def cluster_problem() -> str | None:
    """Why no Slurm cluster can take jobs here, or None when one can."""
    if not shutil.which("sinfo"):
        return "sinfo is not on PATH (Slurm's client is not installed)"
    p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        return f"sinfo failed: {p.stderr.strip()}"
    states = p.stdout.split()
    if not any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states):
        return f"no node can take jobs (sinfo node states: {states or 'none'})"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    why = cluster_problem()
    if why is None:
        return
    message = f"no Slurm cluster: {why}; start one with tests/slurm/cluster.sh up"
    if os.environ.get("STOCHSEG_REQUIRE_SLURM") == "1":
        pytest.fail(message + " (STOCHSEG_REQUIRE_SLURM=1)", pytrace=False)
    print(message, file=sys.stderr)
    pytest.skip(message)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def fast_config(path: Path, execution: dict | None = None, model: str = "unet-p32") -> Path:
    extra = {"ensemble": {"passes": 2, "seed": SEED}}
    if execution:
        extra["execution"] = execution
    return write_config(path, [model_path(model)], extra)


def workflow_config(tmp: Path, cohort: Path, out: Path, pipeline: Path, **more) -> Path:
    cfg = {"cases_dir": str(cohort), "out_dir": str(out), "stochseg": str(BIN),
           "pipeline": str(pipeline), "args": "", "threads": 1, "mem_mb": 0, **more}
    path = tmp / f"{out.name}.yaml"
    path.write_text(json.dumps(cfg))
    return path


def snakemake(cfg: Path, workdir: Path, *extra, slurm: bool = True,
              timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", SNAKEFILE, "--configfile", cfg,
           "--directory", workdir, *extra]
    cmd += ["--profile", PROFILE, *NO_ACCOUNTING] if slurm else ["--cores", "2"]
    p = subprocess.run([str(c) for c in cmd], cwd=str(workdir), env=engine_env(),
                       capture_output=True, text=True, timeout=timeout)
    p.log = p.stdout + p.stderr
    return p


def submitted(log: str) -> dict:
    """Slurm job id -> the rule (and case) it ran, from Snakemake's submission lines."""
    jobs = {}
    for job_id, slurm_log in SUBMITTED.findall(log):
        m = re.search(r"rule_(\w+?)/(?:([^/]+)/)?[^/]+\.log$", slurm_log)
        assert m, slurm_log
        jobs[job_id] = (m.group(1), m.group(2))
    return jobs


def scontrol(job_id: str) -> dict:
    """`scontrol show job` as a dict (finished jobs are kept MinJobAge seconds)."""
    p = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return dict(f.split("=", 1) for f in p.stdout.split() if "=" in f)


def estimate_mib(pipeline: Path, case: Path) -> int:
    p = stochseg("-q", "validate", "--pipeline", pipeline, "--case", case, "--format", "yaml")
    assert p.returncode == 0, p.stderr
    return load_yaml(p.stdout)["estimate"]["peak_memory_mib"]


def cohort_with_gt(root: Path, cases=CASES) -> tuple[Path, Path]:
    cohort, gt = root / "cohort", root / "gt"
    for c in cases:
        make_case(cohort, c)
        (gt / c).mkdir(parents=True)
        shutil.copyfile(CASE_DIR / f"{CASE_ID}-seg.nii.gz", gt / c / f"{c}-seg.nii.gz")
    return cohort, gt


def numbers(value):
    """A report without what names the run (paths, timings, memory measured, UIDs)."""
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()
                if k not in VOLATILE and not k.endswith("_uid")}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    return value


def staging_left(out: Path) -> list:
    return sorted(p.name for p in out.glob(".*.partial-*")) if out.exists() else []


# --------------------------------------------------------------------------------------------
# the cohort through Slurm equals the cohort run locally
# --------------------------------------------------------------------------------------------
def test_cohort_on_slurm_equals_local_run(tmp_path):
    cohort, gt = cohort_with_gt(tmp_path)
    pipeline = fast_config(tmp_path / "fast.yaml")
    more = {"gt_dir": str(gt), "evaluate_args": "--bootstrap 200 --seed 3"}
    on_slurm = tmp_path / "slurm"
    p = snakemake(workflow_config(tmp_path, cohort, on_slurm, pipeline, **more), tmp_path)
    assert p.returncode == 0, p.log[-5000:]

    # one Slurm job per case, then the summary and the evaluation, each with its request
    jobs = submitted(p.log)
    assert sorted(jobs.values()) == sorted(
        [("segment", c) for c in CASES] + [("summarize", None), ("evaluate", None)]), jobs
    # the margin for the job's Snakemake processes, as the shipped config sets it
    margin_mb = load_yaml((SNAKEFILE.parent / "config.yaml").read_text())["mem_margin_mb"]
    for job_id, (rule, case) in jobs.items():
        job = scontrol(job_id)
        assert job["JobState"] == "COMPLETED", (rule, case, job)
        assert "TresPerNode" not in job, job  # a CPU pipeline asks for no GPU
        if rule == "segment":
            mem_mb = math.ceil(estimate_mib(pipeline, cohort / case) * 1.048576) + margin_mb
            assert re.search(rf"\bmem={mem_mb}M\b", job["TRES"]), (mem_mb, job["TRES"])
            assert job["NumCPUs"] == "1" and job["TimeLimit"] == "01:00:00", job

    local = tmp_path / "local"
    q = snakemake(workflow_config(tmp_path, cohort, local, pipeline, **more), tmp_path,
                  slurm=False)
    assert q.returncode == 0, q.log[-5000:]
    assert not SUBMITTED.search(q.log)

    for c in CASES:
        check_report_files(on_slurm / c)
        ours = json.loads((on_slurm / c / "report.json").read_text())
        ref = json.loads((local / c / "report.json").read_text())
        assert ours["ensemble"]["seed"] == SEED and ours["blobs"], ours["ensemble"]
        assert numbers(ours) == numbers(ref), c
        for name in MAPS:
            a, b = (load_nifti(d / c / f"{name}.nii.gz") for d in (on_slurm, local))
            assert a.get_data_dtype() == b.get_data_dtype()
            assert np.array_equal(a.affine, b.affine) and a.header == b.header
            assert np.asarray(a.dataobj).tobytes() == np.asarray(b.dataobj).tobytes(), (c, name)
    # the cohort files, less the timings
    for name in ("cohort-summary.csv", "evaluation-cases.csv", "evaluation-blobs.csv"):
        assert csv_rows(on_slurm / name) == csv_rows(local / name), name
    ev = [load_yaml((d / "evaluation.yaml").read_text()) for d in (on_slurm, local)]
    assert numbers(ev[0]) == numbers(ev[1])
    assert [c["case"] for c in ev[0]["cases"]] == list(CASES)


def csv_rows(path: Path) -> list:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if not k.endswith("_s")}
                for row in csv.DictReader(f)]


# --------------------------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------------------------
def wait_for(what: str, check, timeout: float = 180, every: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)


def test_cancelled_job_leaves_nothing_and_the_rerun_runs_only_its_case(tmp_path):
    cohort = tmp_path / "cohort"
    for c in CASES:
        make_case(cohort, c)
    out = tmp_path / "results"
    cfg = workflow_config(tmp_path, cohort, out, fast_config(tmp_path / "fast.yaml"))
    target = CASES[1]
    cmd = [sys.executable, "-m", "snakemake", "-s", SNAKEFILE, "--configfile", cfg,
           "--directory", tmp_path, "--profile", PROFILE, *NO_ACCOUNTING]
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen([str(c) for c in cmd], cwd=str(tmp_path), env=engine_env(),
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            # the run is under way: its staging folder exists
            staging = wait_for(f"{target}'s staging folder",
                               lambda: list(out.glob(f".{target}.partial-*")))
            job_id = wait_for(f"{target}'s Slurm job", lambda: slurm_job_of(target), 30)
            subprocess.run(["scancel", job_id], check=True, timeout=30)
            rc = first.wait(timeout=600)
        finally:
            if first.poll() is None:
                first.kill()
    text = log_path.read_text()
    assert rc != 0, text[-4000:]
    assert re.search(rf"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'", text), \
        text[-4000:]
    # stochseg stopped on SIGTERM (exit 130) and removed its staging folder; Snakemake
    # removed nothing of stochseg's (it does not know the staging folder's name)
    assert not staging[0].exists() and staging_left(out) == [], staging_left(out)
    assert not (out / target).exists()
    assert (out / ".logs" / f"{target}.log").read_text().rstrip().endswith(
        "stochseg: error: interrupted")
    assert not (out / ".logs" / f"{target}.failed").exists()  # cancelled, not failed
    others = [c for c in CASES if c != target]
    kept = {}
    for c in others:  # --keep-going: the other cases finished
        check_report_files(out / c)
        kept[c] = (out / c / "report.json").stat().st_mtime_ns
    assert not (out / "cohort-summary.csv").exists()

    again = snakemake(cfg, tmp_path)
    assert again.returncode == 0, again.log[-5000:]
    assert sorted(submitted(again.log).values()) == [("segment", target), ("summarize", None)]
    check_report_files(out / target)
    assert {c: (out / c / "report.json").stat().st_mtime_ns for c in others} == kept
    with open(out / "cohort-summary.csv", newline="") as f:
        assert sorted(r["status"] for r in csv.DictReader(f)) == ["ok"] * len(CASES)


def slurm_job_of(case: str) -> str | None:
    """The id of the queued or running Slurm job of `case`'s segment rule (by its comment)."""
    p = subprocess.run(["squeue", "-h", "-o", "%i %k %T"], capture_output=True, text=True,
                       timeout=30)
    for line in p.stdout.splitlines():
        job_id, comment, state = line.split()
        if comment == f"rule_segment_wildcards_{case}" and state == "RUNNING":
            return job_id
    return None


def test_job_over_its_memory_request_is_killed_and_its_retry_asks_twice(tmp_path):
    cohort = tmp_path / "cohort"
    make_case(cohort, CASES[0])
    out = tmp_path / "results"
    # unet-p256 peaks at about 310 MB on this case; the job asks for 250 MB. The memory is
    # checked per job step: the batch step (the job's Snakemake, about 125 MB) stays under it,
    # step 0 (the Snakemake that srun starts, and stochseg under it) does not
    pipeline = fast_config(tmp_path / "p256.yaml", model="unet-p256")
    cfg = workflow_config(tmp_path, cohort, out, pipeline, mem_mb=250)
    p = snakemake(cfg, tmp_path, "--retries", "1")
    assert p.returncode == 0, p.log[-4000:]
    jobs = submitted(p.log)
    assert sorted(jobs.values()) == [("segment", CASES[0])] * 2 + [("summarize", None)], jobs
    first, second = sorted((j for j, (rule, _) in jobs.items() if rule == "segment"), key=int)
    # Slurm's kill message, from the job's log, in Snakemake's own output (show-failed-logs)
    m = re.search(rf"StepId={first}\.0 exceeded memory limit \((\d+) > (\d+)\), being killed",
                  p.log)
    assert m, p.log[-4000:]
    assert int(m.group(2)) == 250 * 2**20 < int(m.group(1))
    assert f"SLURM-job '{first}' failed" in p.log
    # the retry asked for twice as much and finished; the killed run's staging folder and
    # lock (SIGKILL leaves them) were cleared by it
    assert scontrol(first)["JobState"] == "FAILED"
    job = scontrol(second)
    assert job["JobState"] == "COMPLETED" and re.search(r"\bmem=500M\b", job["TRES"]), job
    check_report_files(out / CASES[0])
    assert staging_left(out) == [] and not list(out.glob(".*.lock"))


def test_bad_case_fails_its_own_job_with_stochsegs_exit_code(tmp_path):
    cohort = tmp_path / "cohort"
    for c in CASES[:2]:
        make_case(cohort, c)
    bad_id = "BAD-00009-000"
    bad = make_case(cohort, bad_id) / f"{bad_id}-t2w.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file\n" * 20)
    out = tmp_path / "results"
    cfg = workflow_config(tmp_path, cohort, out, fast_config(tmp_path / "fast.yaml"))
    p = snakemake(cfg, tmp_path)
    assert p.returncode != 0, p.log[-4000:]
    jobs = submitted(p.log)
    assert sorted(jobs.values()) == sorted([("segment", c) for c in CASES[:2]]
                                           + [("segment", bad_id)]), jobs
    for c in CASES[:2]:
        check_report_files(out / c)
    assert not (out / bad_id).exists() and staging_left(out) == []
    # no memory estimate for it (validate reads the same header): a small request, a warning
    assert f"case {bad_id}: no memory estimate" in p.log
    # its job ran stochseg, which exited 3 (input rejected): the marker keeps the code, and
    # the one-line error is in Snakemake's log (show-failed-logs prints the rule's log)
    error = f"stochseg: error: {bad}"
    assert error in p.log, p.log[-4000:]
    marker = (out / ".logs" / f"{bad_id}.failed").read_text()
    assert marker.startswith("exit_code: 3\nerror: " + error), marker
    # the cohort summary, written by hand after a failed workflow, lists it
    s = stochseg("-q", "summarize", out)
    assert s.returncode == 0, s.stderr
    with open(out / "cohort-summary.csv", newline="") as f:
        rows = {r["folder"]: r for r in csv.DictReader(f)}
    assert {k: r["status"] for k, r in rows.items()} == {
        CASES[0]: "ok", CASES[1]: "ok", bad_id: "failed"}
    assert rows[bad_id]["exit_code"] == "3"


# --------------------------------------------------------------------------------------------
# GPU
# --------------------------------------------------------------------------------------------
def test_gpu_pipeline_asks_for_a_gpu_in_the_gpu_partition(tmp_path):
    """The node's gres gpu:1 is a count, no device (tests/slurm/cluster.sh): this checks the
    request and the scheduling; the run itself falls back to the CPU, as its config allows."""
    cohort = tmp_path / "cohort"
    make_case(cohort, CASES[0])
    out = tmp_path / "results"
    pipeline = fast_config(tmp_path / "gpu.yaml",
                           execution={"providers": ["cuda", "cpu"], "allow_fallback": True})
    v = stochseg("-q", "validate", "--pipeline", pipeline, "--format", "yaml")
    assert v.returncode == 0, v.stderr
    assert load_yaml(v.stdout)["execution"] == {
        "providers": ["cuda", "cpu"], "allow_fallback": True, "gpu": True}
    p = snakemake(workflow_config(tmp_path, cohort, out, pipeline, gpu_partition="gpu"),
                  tmp_path)
    assert p.returncode == 0, p.log[-4000:]
    segment = [j for j, (rule, _) in submitted(p.log).items() if rule == "segment"]
    assert len(segment) == 1
    job = scontrol(segment[0])
    assert job["Partition"] == "gpu" and job["TresPerNode"] == "gres:gpu:1", job
    assert job["JobState"] == "COMPLETED"
    report = json.loads((out / CASES[0] / "report.json").read_text())
    assert report["runtime"]["providers_requested"] == ["cuda", "cpu"]
    assert report["models"][0]["execution_provider"] == "CPUExecutionProvider"
