"""The installed tool (docs/install.md): `make install` into a temporary prefix, the whole tree
moved to another folder, and `stochseg` run there by name in a clean environment (`env -i
PATH=/usr/bin:/bin:PREFIX/bin`: no ORT_DYLIB_PATH, no venv).

Checked: the tree holds the checkout's binary, ONNX Runtime library, pipelines and models byte
for byte, and its manifest lists exactly its files; the moved tree runs case-small with its
default pipeline (2 passes) to the same report numbers and maps as the checkout's binary with
the checkout's pipeline, loading its own library; a shipped pipeline by name, the list of
pipelines (against the YAML files), an unknown name (exit 2); `-v --version`, also through
a symlink; `doctor` passes on the tree and fails with exit 4 and one line naming the place when
the library or a model is gone; `make uninstall` leaves a prefix as it was (also after the move), keeping a user's file;
the man pages render with groff and, like the bash, zsh and fish completions, name every
command of `stochseg --help` (bash's completion function is run for real)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import (CASE_DIR, MAPS, ROOT, check_report_files, error_line, installed_stochseg,
                      load_nifti, make_install, ort_library, run_ok, stochseg)

DEFAULT = "brats-goat-stochastic"
MANIFEST = "share/stochseg/install-manifest"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict:
    """Every file and folder under `root`: relative path -> sha256 (files) or "dir"."""
    return {p.relative_to(root).as_posix(): digest(p) if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def commands() -> list[str]:
    """The commands `stochseg --help` lists (without clap's `help`)."""
    text = stochseg("--help").stdout
    block = text.split("Commands:", 1)[1].split("Options:", 1)[0]
    names = [line.split()[0] for line in block.splitlines() if line.strip()]
    assert len(names) >= 8, text
    return [n for n in names if n != "help"]


# --------------------------------------------------------------------------------------------
# the tree
# --------------------------------------------------------------------------------------------
def test_the_tree_holds_the_checkouts_files_and_its_manifest_lists_them(installed):
    lib = Path(ort_library())
    same = {
        "bin/stochseg": ROOT / "target" / "release" / "stochseg",
        f"lib/stochseg/{lib.name}": lib,
        f"share/stochseg/pipelines/{DEFAULT}.yaml": ROOT / "pipelines" / f"{DEFAULT}.yaml",
        "share/stochseg/onnx/unet-p256.onnx": ROOT / "onnx" / "unet-p256.onnx",
        "share/stochseg/workflows/snakemake/Snakefile": ROOT / "pipelines/snakemake/Snakefile",
    }
    for rel, source in same.items():
        assert digest(installed / rel) == digest(source), rel
    # the OpenVINO plugin package comes along when the venv has it
    plugin = lib.parent.parent.parent / "onnxruntime_ep_openvino"
    copied = installed / "lib" / "stochseg" / "onnxruntime_ep_openvino"
    assert copied.is_dir() == plugin.is_dir()
    # the pipelines' ../onnx/ models are in the tree
    for cfg in (installed / "share/stochseg/pipelines").glob("*.yaml"):
        for m in yaml.safe_load(cfg.read_text())["models"]:
            assert (cfg.parent / m["path"]).resolve().is_file(), (cfg, m)
    listed = (installed / MANIFEST).read_text().splitlines()
    files = {line[2:] for line in listed if line.startswith("f ")}
    dirs = {line[2:] for line in listed if line.startswith("d ")}
    assert len(files) + len(dirs) == len(listed)
    found = tree(installed)
    assert files == {p for p, h in found.items() if h != "dir"} - {MANIFEST}
    assert dirs == {p for p, h in found.items() if h == "dir"}


# --------------------------------------------------------------------------------------------
# running the moved tree
# --------------------------------------------------------------------------------------------
def without_uids(node):
    """`node` without the DICOM UIDs (new ones for every run)."""
    if isinstance(node, dict):
        return {k: without_uids(v) for k, v in node.items() if not k.endswith("_uid")}
    if isinstance(node, list):
        return [without_uids(v) for v in node]
    return node


def stable(report: dict) -> dict:
    """A report without what names the run's files, place and time, and the DICOM UIDs."""
    r = without_uids(report)
    for key in ("timings_s", "peak_rss_mib"):
        r.pop(key)
    r["pipeline"].pop("config")
    r["pipeline"].pop("source")
    r["runtime"].pop("onnxruntime_library")
    for m in r["models"]:
        m.pop("path")
        if "plugin" in m:
            m["plugin"].pop("library")
    return r


def test_the_moved_tree_runs_by_name_with_its_default_pipeline(installed, tmp_path):
    out = tmp_path / "installed"
    p = installed_stochseg(installed, "run", "--case", CASE_DIR, "--out", out, "--passes", "2",
                           cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == str(out / "report.yaml")
    assert "using the shipped default pipeline" in p.stderr, p.stderr
    check_report_files(out)
    ours = json.loads((out / "report.json").read_text())
    data = installed / "share" / "stochseg"
    assert ours["pipeline"] == {"name": DEFAULT, "source": "default",
                                "config": str(data / "pipelines" / f"{DEFAULT}.yaml")}
    lib = Path(ours["runtime"]["onnxruntime_library"])
    assert lib.parent == installed / "lib" / "stochseg", lib
    assert all(Path(m["path"]).resolve().parent == data / "onnx" for m in ours["models"])
    # the shipped pipeline runs on OpenVINO: the plugin the tree carries, not the checkout's
    plugins = {Path(m["plugin"]["library"]).parent for m in ours["models"]
               if m["execution_provider"] == "OpenVINOExecutionProvider"}
    assert plugins in (set(), {installed / "lib" / "stochseg" / "onnxruntime_ep_openvino"}), plugins

    # the checkout's binary and pipeline, the same settings
    ref = run_ok(tmp_path / "in-tree", "--pipeline", ROOT / "pipelines" / f"{DEFAULT}.yaml",
                 "--case", CASE_DIR, "--passes", "2")
    assert ref.report["pipeline"]["source"] == "file"
    assert ours["ensemble"]["total_passes"] == 6 and ours["blobs"], ours["ensemble"]
    assert stable(ours) == stable(ref.report)
    for name in MAPS:
        a = np.asarray(load_nifti(out / f"{name}.nii.gz").dataobj)
        assert np.array_equal(a, np.asarray(ref.img(name).dataobj)), name


def test_pipelines_by_name_and_their_list(installed, tmp_path):
    shipped = installed / "share" / "stochseg" / "pipelines"
    p = installed_stochseg(installed, "pipelines", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = [line.split(None, 1) for line in p.stdout.splitlines()]
    expected = {f.stem: yaml.safe_load(f.read_text())["description"]
                for f in shipped.glob("*.yaml")}
    assert [r[0] for r in rows] == sorted(expected)
    for name, text in rows:
        suffix = " (default)" if name == DEFAULT else ""
        assert text == expected[name] + suffix, (name, text)

    p = installed_stochseg(installed, "-q", "validate", "--pipeline", "brats-goat-deterministic",
                           "--format", "yaml", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    v = yaml.safe_load(p.stdout)
    assert v["pipeline_source"] == "name"
    assert v["pipeline_config"] == str(shipped / "brats-goat-deterministic.yaml")
    assert v["effective_config"]["ensemble"]["mode"] == "deterministic"

    # a file of the same name in the working folder wins over the shipped pipeline
    mine = tmp_path / "brats-goat-deterministic"
    mine.write_text((shipped / f"{DEFAULT}.yaml").read_text().replace("../onnx/",
                                                                     f"{shipped}/../onnx/"))
    p = installed_stochseg(installed, "-q", "validate", "--pipeline", mine.name, "--format",
                           "yaml", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout)["pipeline_source"] == "file"

    p = installed_stochseg(installed, "validate", "--pipeline", "brats-goat-nope", cwd=tmp_path)
    assert p.returncode == 2
    names = ", ".join(sorted(f.stem for f in (ROOT / "pipelines").glob("*.yaml")))
    assert error_line(p) == ("stochseg: error: --pipeline brats-goat-nope: no such file, and no "
                             f"shipped pipeline of that name (shipped pipelines: {names})")


def test_verbose_version_names_the_library_and_the_data(installed, tmp_path):
    p = installed_stochseg(installed, "--version", cwd=tmp_path)
    version = yaml.safe_load((ROOT / "Cargo.toml").read_text().split("[package]")[1]
                             .split("\n[")[0].replace(" = ", ": "))["version"]
    assert p.stdout == f"stochseg {version}\n"
    p = installed_stochseg(installed, "-v", "--version", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = dict(line.split(": ", 1) for line in p.stdout.splitlines()[1:])
    assert lines["executable"] == f"{installed}/bin/stochseg (installed tree)"
    assert lines["data"] == f"{installed}/share/stochseg"
    lib = Path(ort_library())
    assert lines["onnxruntime"] == (f"{lib.name.split('.so.')[1]} "
                                    f"({installed}/lib/stochseg/{lib.name})")
    assert "CPUExecutionProvider" in lines["providers"].split(", ")

    # through a symlink in another folder: the same tree
    link = tmp_path / "links" / "stochseg"
    link.parent.mkdir()
    link.symlink_to(installed / "bin" / "stochseg")
    p = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", str(link), "-v", "--version"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert dict(line.split(": ", 1) for line in p.stdout.splitlines()[1:]) == lines


# --------------------------------------------------------------------------------------------
# doctor
# --------------------------------------------------------------------------------------------
def doctor_without(installed: Path, path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """`stochseg doctor` on the tree while `path` is moved out of it."""
    hidden = tmp_path / path.name
    path.rename(hidden)
    try:
        return installed_stochseg(installed, "doctor", cwd=tmp_path)
    finally:
        hidden.rename(path)


def test_doctor_passes_then_names_what_is_missing(installed, tmp_path):
    temp_before = set(Path("/tmp").glob("stochseg-doctor-*"))
    p = installed_stochseg(installed, "doctor", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    checks = [line.split(":")[0] for line in p.stdout.splitlines()]
    assert checks[0] == "ok  installation" and checks[-1] == "ok  synthetic case", p.stdout
    # every model file of the installed tree, once
    models = list((installed / "share" / "stochseg" / "onnx").glob("*.onnx"))
    assert sum(c == "ok  models" for c in checks) == len(models) >= 3
    assert not list(tmp_path.iterdir()), "doctor left files in the working folder"
    assert set(Path("/tmp").glob("stochseg-doctor-*")) == temp_before, "doctor left its case"

    lib = next((installed / "lib" / "stochseg").glob("libonnxruntime.so.*"))
    p = doctor_without(installed, lib, tmp_path)
    assert p.returncode == 4
    line = error_line(p)
    assert line.startswith("stochseg: error: doctor: onnxruntime: ONNX Runtime library not "
                           f"found; tried: {lib.parent}/libonnxruntime.so (the installation"), line
    assert p.stdout.startswith("ok  installation") and "onnxruntime" not in p.stdout

    model = installed / "share" / "stochseg" / "onnx" / "unet-p64.onnx"
    p = doctor_without(installed, model, tmp_path)
    assert p.returncode == 4
    assert error_line(p) == (f"stochseg: error: doctor: pipelines: "
                             f"{model.parent.parent}/pipelines/../onnx/unet-p64.onnx: "
                             "no such model file")


# --------------------------------------------------------------------------------------------
# uninstall
# --------------------------------------------------------------------------------------------
def test_uninstall_leaves_the_prefix_as_it_was(tmp_path):
    prefix = tmp_path / "prefix"
    for rel, text in {"bin/other-tool": "#!/bin/sh\n", "share/man/man1/other.1": ".TH OTHER 1\n",
                      "lib/README": "not ours\n"}.items():
        (prefix / rel).parent.mkdir(parents=True, exist_ok=True)
        (prefix / rel).write_text(text)
    before = tree(prefix)
    make_install(prefix)
    make_install(prefix)  # over itself: the earlier install goes first
    assert len(tree(prefix)) > len(before) + 20
    # a user's own file in the tree stays, and so do its folders
    own = prefix / "share" / "stochseg" / "pipelines" / "mine.yaml"
    own.write_text("models: []\n")
    own_digest = digest(own)
    moved = tmp_path / "moved"
    prefix.rename(moved)
    make_install(moved, "uninstall")
    assert tree(moved) == {**before, "share/stochseg": "dir", "share/stochseg/pipelines": "dir",
                           "share/stochseg/pipelines/mine.yaml": own_digest}
    (moved / "share/stochseg/pipelines/mine.yaml").unlink()
    for d in ("share/stochseg/pipelines", "share/stochseg"):
        (moved / d).rmdir()
    assert tree(moved) == before
    p = subprocess.run(["make", "-C", str(ROOT), "uninstall", f"PREFIX={moved}"],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "no manifest" in p.stderr


# --------------------------------------------------------------------------------------------
# man pages and completions
# --------------------------------------------------------------------------------------------
def test_man_pages_render_and_name_every_command(installed):
    man1 = installed / "share" / "man" / "man1"
    names = commands()
    assert {p.name for p in man1.glob("*.1")} == {"stochseg.1"} | {f"stochseg-{c}.1"
                                                                   for c in names}
    for page in man1.glob("*.1"):
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                           capture_output=True, text=True)
        assert r.returncode == 0 and not r.stderr, f"{page.name}: {r.stderr}"
    top = subprocess.run(["groff", "-man", "-Tutf8", str(man1 / "stochseg.1")],
                         capture_output=True, text=True).stdout
    top = re.sub(r".\x08", "", top)
    for c in names:
        assert re.search(rf"\bstochseg-{c}\(1\)", top), c
    # every flag of `run --help` is on its page
    run_page = re.sub(r".\x08", "", subprocess.run(
        ["groff", "-man", "-Tutf8", str(man1 / "stochseg-run.1")],
        capture_output=True, text=True).stdout)
    flags = set(re.findall(r"--[a-z][a-z-]+", stochseg("run", "--help").stdout))
    missing = sorted(f for f in flags if f not in run_page)
    assert not missing, missing


def bash_complete(installed: Path, words: list[str]) -> list[str]:
    """What bash's completion function offers for the command line `words` (the last one being
    completed)."""
    script = installed / "share" / "bash-completion" / "completions" / "stochseg"
    words_text = " ".join(f"'{w}'" for w in words)
    code = (f"source '{script}'; COMP_WORDS=({words_text}); COMP_CWORD={len(words) - 1}; "
            f"COMP_LINE='{' '.join(words)}'; COMP_POINT=${{#COMP_LINE}}; "
            "_stochseg stochseg \"${COMP_WORDS[COMP_CWORD]}\" \"${COMP_WORDS[COMP_CWORD-1]}\"; "
            "printf '%s\\n' \"${COMPREPLY[@]}\"")
    r = subprocess.run(["bash", "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_completions_name_every_command(installed):
    names = commands()
    assert set(names) <= set(bash_complete(installed, ["stochseg", ""]))
    assert bash_complete(installed, ["stochseg", "pip"]) == ["pipelines"]
    assert "--passes" in bash_complete(installed, ["stochseg", "run", "--pa"])
    zsh = (installed / "share/zsh/site-functions/_stochseg").read_text()
    fish = (installed / "share/fish/vendor_completions.d/stochseg.fish").read_text()
    assert zsh.startswith("#compdef stochseg")
    for c in names:
        assert re.search(rf"^'{c}:", zsh, re.M), f"zsh: {c}"
        assert re.search(rf'-a "{c}"', fish), f"fish: {c}"
