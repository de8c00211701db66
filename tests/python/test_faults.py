"""Faults (issue 7): SIGTERM and SIGHUP, like SIGINT (tests/python/test_exit_codes.py), stop a run
with exit 130, one `stochseg: error: interrupted` line, and nothing beside --out: no output
folder, no `.<name>.partial-*` staging folder, no `.<name>.lock`. Signals are sent at two points
the logs announce: once the models are open (the run is about to read voxels) and once the first
ensemble pass is done.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CASE_DIR, Watched, error_line, model_path

# the log line after which the signal is sent
POINTS = {
    "models-open": 'stage="load_models"',
    "first-pass-done": "pass done",
}


def start(out: Path) -> Watched:
    return Watched(["run", "--model", model_path("unet-p32"), "--passes", "200", "--threads", "1",
                    "--case", CASE_DIR, "--out", out])


@pytest.mark.parametrize("point", sorted(POINTS))
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_exits_130_and_leaves_nothing(tmp_path, sig, point):
    results = tmp_path / "results"
    results.mkdir()
    out = results / "out"
    run = start(out)
    run.wait_for_line(POINTS[point], timeout=120)
    run.proc.send_signal(sig)
    t0 = time.monotonic()
    # within about one batch of the signal (a pass of unet-p32 takes about a second here)
    stdout, stderr = run.finish(timeout=30)
    assert run.proc.returncode == 130, f"exit {run.proc.returncode}:\n{stderr[-3000:]}"
    assert time.monotonic() - t0 < 30
    line = error_line(subprocess.CompletedProcess([], 130, stdout, stderr))
    assert line == "stochseg: error: interrupted", line
    assert "panicked" not in stderr
    assert stdout == "", "an interrupted run prints no report path"
    assert sorted(p.name for p in results.iterdir()) == [], "an interrupted run leaves nothing"


def test_a_silent_hang_fails_instead_of_blocking(tmp_path):
    """Negative control of the waits above: a run stopped with SIGSTOP (it hangs and writes
    nothing) fails each wait within its deadline, and is killed."""
    run = start(tmp_path / "out")
    run.wait_for_line(POINTS["models-open"], timeout=120)
    run.proc.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="no 'pass done' on stderr within 2 s"):
        run.wait_for_line(POINTS["first-pass-done"], timeout=2)
    assert time.monotonic() - t0 < 10
    assert run.proc.returncode == -signal.SIGKILL, "the hung run is killed"
    run = start(tmp_path / "out2")
    run.wait_for_line(POINTS["models-open"], timeout=120)
    run.proc.send_signal(signal.SIGSTOP)
    run.proc.send_signal(signal.SIGTERM)  # pending while stopped: the run never ends
    with pytest.raises(pytest.fail.Exception, match="did not end within 2 s"):
        run.finish(timeout=2)
    assert run.proc.returncode == -signal.SIGKILL
