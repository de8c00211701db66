"""What an engine captures from a run: with `--log-format json` every stderr line is one JSON
object with a level and fields (pass and stage events included), stdout holds only the report
path, and when stderr is not a terminal there is no progress bar, no carriage return and no
colour code in either format. On a terminal (a pseudo-terminal here) the bar does appear."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

from conftest import BIN, CASE_DIR, env, model_path, stochseg

LEVELS = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"}
BAR_CHARS = ("\r", "\x1b", "█", "░", "▏", "ETA")


def run_args(out):
    return ["run", "--model", model_path("unet-p32"), "--passes", "2", "--threads", "2",
            "--case", CASE_DIR, "--out", out]


def test_json_log_lines_and_clean_stdout(tmp_path):
    out = tmp_path / "o"
    p = stochseg("--log-format", "json", *run_args(out), "--compare-deterministic")
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{out / 'report.yaml'}\n"
    events = []
    for line in p.stderr.splitlines():
        obj = json.loads(line)  # every line parses
        assert isinstance(obj, dict), line
        assert obj["level"] in LEVELS, line
        assert isinstance(obj["fields"], dict) and "message" in obj["fields"], line
        events.append(obj["fields"])
    passes = [e for e in events if e["message"] == "pass done"]
    # one count over the ensemble's passes and then the deterministic comparison's
    assert [(e["ensemble"], e["model"], e["pass"], e["done"], e["total"]) for e in passes] == [
        ("stochastic", 0, 0, 1, 3), ("stochastic", 0, 1, 2, 3), ("deterministic", 0, 0, 3, 3)]
    stages = {e["stage"] for e in events if e["message"] == "stage done"}
    assert {"load", "preprocess", "ensemble", "blobs", "write_maps",
            "deterministic_comparison"} <= stages
    # every stage starts before it ends, and the passes run inside the ensemble stages
    def at(message, stage):
        return next(i for i, e in enumerate(events)
                    if e["message"] == message and e.get("stage") == stage)

    for stage in stages:
        assert at("stage start", stage) < at("stage done", stage), stage
    assert at("stage start", "ensemble") < events.index(passes[0])
    assert events.index(passes[1]) < at("stage done", "ensemble")
    assert at("stage start", "deterministic_comparison") < events.index(passes[2])
    assert events.index(passes[2]) < at("stage done", "deterministic_comparison")
    finished = [e for e in events if e["message"] == "finished"]
    assert len(finished) == 1 and finished[0]["blobs"] >= 1
    assert not any(c in p.stderr for c in BAR_CHARS)


def test_text_log_without_a_terminal_has_no_bar_and_no_colour(tmp_path):
    p = stochseg(*run_args(tmp_path / "o"))
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"{tmp_path / 'o' / 'report.yaml'}\n"
    assert "pass done" in p.stderr
    for c in BAR_CHARS:
        assert c not in p.stderr, f"{c!r} in stderr that is not a terminal"


def test_quiet_prints_only_the_report_path(tmp_path):
    p = stochseg("-q", *run_args(tmp_path / "o"))
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout == f"{tmp_path / 'o' / 'report.yaml'}\n"


def test_progress_bar_on_a_terminal(tmp_path):
    """stderr on a pseudo-terminal: the bar is drawn there, stdout still holds only the path."""
    master, slave = pty.openpty()
    e = {**env(), "TERM": "xterm"}
    proc = subprocess.Popen([str(BIN), *map(str, run_args(tmp_path / "o"))], env=e,
                            stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    stdout, _ = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0
    assert stdout == f"{tmp_path / 'o' / 'report.yaml'}\n"
    text = seen.decode(errors="replace")
    assert "passes" in text and ("\r" in text or "\x1b[" in text), text[-2000:]
