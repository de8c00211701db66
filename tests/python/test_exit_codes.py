"""The contract with workflow engines (README, "Exit codes"): 0 (also with no blob), 2, 3, 4, 5
and 130 (SIGINT: nothing left behind), `kill -9` leaves nothing that looks finished and a re-run
succeeds, a second run into the same --out is refused with exit 5 while the first completes, and
the thread count follows --threads, else SLURM_CPUS_PER_TASK."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import CASE_DIR, Watched, error_line, model_path, run_ok, stochseg, write_config


def model_args(passes: int = 1):
    return ["--model", model_path("unet-p32"), "--passes", str(passes)]


def start_run(out: Path, passes: int, *extra, threads: str | None = "1",
              extra_env=None) -> Watched:
    args = ["run", *model_args(passes), "--case", CASE_DIR, "--out", out, *extra]
    return Watched(args + (["--threads", threads] if threads else []), extra_env)


def wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


def staging_started(out: Path):
    return lambda: any(p.name.startswith(f".{out.name}.partial-") for p in out.parent.iterdir())


def leftovers(parent: Path, name: str) -> list:
    return sorted(p.name for p in parent.iterdir() if name in p.name)


def test_success_and_zero_blobs_exit_0(tmp_path):
    r = run_ok(tmp_path / "none", *model_args(), "--case", CASE_DIR, "--threshold", "50")
    assert r.report["blobs"] == []
    assert (r.out / "seg.dcm").is_file()


def test_usage_and_config_errors_exit_2(tmp_path):
    p = stochseg("run", "--no-such-flag")
    assert p.returncode == 2
    p = stochseg("run", *model_args(), "--case", CASE_DIR, "--out", tmp_path / "o",
                 "--passes", "0")
    assert p.returncode == 2 and error_line(p)
    cfg = write_config(tmp_path / "bad.yaml", [model_path("unet-p32")], {"blobs": {"oops": 1}})
    p = stochseg("run", "--pipeline", cfg, "--case", CASE_DIR, "--out", tmp_path / "o")
    assert p.returncode == 2 and "oops" in error_line(p)
    assert not (tmp_path / "o").exists()


def test_input_rejected_exit_3(tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    p = stochseg("run", *model_args(), "--case", tmp_path / "missing", "--out", res / "o")
    assert p.returncode == 3 and "missing" in error_line(p)
    assert os.listdir(res) == []


def test_model_failure_exit_4(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    res = tmp_path / "res"
    res.mkdir()
    p = stochseg("run", "--model", bad, "--case", CASE_DIR, "--out", res / "o")
    assert p.returncode == 4 and "bad.onnx" in error_line(p)
    assert os.listdir(res) == []


def test_output_failure_exit_5(tmp_path):
    (tmp_path / "o").mkdir()
    p = stochseg("run", *model_args(), "--case", CASE_DIR, "--out", tmp_path / "o")
    assert p.returncode == 5 and "--overwrite" in error_line(p)


def test_sigint_exits_130_and_leaves_nothing(tmp_path):
    out = tmp_path / "o"
    run = start_run(out, 200)
    wait_for(staging_started(out))
    time.sleep(1.0)
    run.proc.send_signal(signal.SIGINT)
    _, stderr = run.finish(timeout=60)
    assert run.proc.returncode == 130, stderr
    assert "interrupted" in error_line(subprocess.CompletedProcess([], 130, "", stderr))
    assert leftovers(tmp_path, "o") == [], "an interrupted run must leave nothing"


def test_kill_9_leaves_nothing_finished_and_a_rerun_succeeds(tmp_path):
    out = tmp_path / "o"
    run = start_run(out, 200)
    wait_for(staging_started(out))
    time.sleep(0.5)
    run.proc.kill()
    run.finish(timeout=60)
    assert run.proc.returncode == -signal.SIGKILL
    assert not out.exists()
    assert not list(tmp_path.rglob("report.yaml")), "a killed run must not look finished"
    r = run_ok(out, *model_args(), "--case", CASE_DIR)
    assert r.report["blobs"]
    # the killed run's staging folder is cleaned up by the next run into the same place
    assert leftovers(tmp_path, ".o.partial-") == []


def test_second_concurrent_run_is_refused_and_first_completes(tmp_path):
    out = tmp_path / "o"
    first = start_run(out, 6)
    wait_for(staging_started(out))
    p = stochseg("run", *model_args(), "--case", CASE_DIR, "--out", out, "--overwrite")
    assert p.returncode == 5, p.stderr
    assert "another stochseg run is writing" in error_line(p)
    stdout, stderr = first.finish(timeout=300)
    assert first.proc.returncode == 0, stderr
    assert stdout.strip() == str(out / "report.yaml")
    assert json.loads((out / "report.json").read_text())["ensemble"]["total_passes"] == 6
    assert leftovers(tmp_path, ".o.partial-") == []


def max_threads(out: Path, threads: str | None, extra_env=None) -> tuple[int, dict]:
    """Runs a case, sampling the process's thread count; returns (max threads, report)."""
    run = start_run(out, 3, threads=threads, extra_env=extra_env)
    most = 0
    end = time.monotonic() + 300
    while run.proc.poll() is None and time.monotonic() < end:
        try:
            most = max(most, len(os.listdir(f"/proc/{run.proc.pid}/task")))
        except FileNotFoundError:
            break
        time.sleep(0.02)
    _, stderr = run.finish(timeout=10)
    assert run.proc.returncode == 0, stderr
    return most, json.loads((out / "report.json").read_text())


def test_threads_flag_and_slurm_default(tmp_path):
    one, report = max_threads(tmp_path / "one", "1")
    assert report["runtime"]["threads"] == 1
    four, report = max_threads(tmp_path / "four", "4")
    assert report["runtime"]["threads"] == 4
    # rayon's pool and ONNX Runtime's intra-op pool both grow by three threads
    assert four >= one + 3, (one, four)
    # no flag: SLURM_CPUS_PER_TASK; a flag wins over it
    slurm = {"SLURM_CPUS_PER_TASK": "3"}
    _, report = max_threads(tmp_path / "slurm", None, extra_env=slurm)
    assert report["runtime"]["threads"] == 3
    _, report = max_threads(tmp_path / "flag", "1", extra_env=slurm)
    assert report["runtime"]["threads"] == 1
