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

from conftest import BIN, CASE_DIR, env, error_line, model_path

# the log line after which the signal is sent
POINTS = {
    "models-open": 'stage="load_models"',
    "first-pass-done": "pass done",
}


def start(out: Path) -> subprocess.Popen:
    cmd = [str(BIN), "run", "--model", str(model_path("unet-p32")), "--passes", "200",
           "--threads", "1", "--case", str(CASE_DIR), "--out", str(out)]
    return subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_line(proc: subprocess.Popen, marker: str, timeout: float = 120) -> list[str]:
    seen = []
    end = time.monotonic() + timeout
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            return seen
        assert time.monotonic() < end, f"no {marker!r} within {timeout} s:\n{''.join(seen)}"
    pytest.fail(f"the run ended before {marker!r}:\n{''.join(seen)}")


@pytest.mark.parametrize("point", sorted(POINTS))
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_exits_130_and_leaves_nothing(tmp_path, sig, point):
    results = tmp_path / "results"
    results.mkdir()
    out = results / "out"
    proc = start(out)
    seen = wait_for_line(proc, POINTS[point])
    proc.send_signal(sig)
    t0 = time.monotonic()
    stdout, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert proc.returncode == 130, f"exit {proc.returncode}:\n{stderr[-3000:]}"
    # within about one batch of the signal (a pass of unet-p32 takes about a second here)
    assert time.monotonic() - t0 < 30
    line = error_line(subprocess.CompletedProcess([], 130, stdout, stderr))
    assert line == "stochseg: error: interrupted", line
    assert "panicked" not in stderr
    assert stdout == "", "an interrupted run prints no report path"
    assert sorted(p.name for p in results.iterdir()) == [], "an interrupted run leaves nothing"
