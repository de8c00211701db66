"""`stochseg summarize OUT_DIR` on real run outputs: one CSV row and one YAML entry per case
folder, figures recomputed here from each report.json, failures from `make batch`'s markers,
cohort totals, atomic writes, and the README's exit codes. Reports are read as typed reports:
one with a field missing or of the wrong type, or not a stochseg report, is refused (exit 3)
naming the file and the field; a version 1 report is read."""

from __future__ import annotations

import copy
import csv
import json
import shutil
import statistics

import pytest
import yaml

from conftest import CASE_DIR, FIXTURES, error_line, load_yaml, model_path, run_ok, stochseg

V1_SCHEMA = FIXTURES / "report-v1.schema.yaml"
V2_BLOB_FIELDS = ("mean_entropy", "mean_mutual_information", "mean_logit_variance_between",
                  "mean_logit_variance_within")
V2_COMPARISON_FIELDS = ("stochastic_mean_entropy", "deterministic_mean_entropy",
                        "stochastic_mean_mutual_information",
                        "deterministic_mean_mutual_information",
                        "deterministic_mean_logit_variance_between")


def v1_report(report: dict) -> dict:
    """`report` (version 2) as a version 1 run wrote it: without the regions (`region`,
    `regions`, `label_map`, `models[].outputs`, `seg.levels`, `seg.files[].segments[].region`),
    the uncertainty decomposition (`uncertainty` and the per-blob and comparison fields),
    `models[].precision` and `plugin`, and `pipeline.source`; checked against the version 1 schema."""
    import jsonschema

    old = copy.deepcopy(report)
    old["schema_version"] = 1
    for key in ("region", "regions", "label_map", "uncertainty"):
        old.pop(key, None)
    old["pipeline"].pop("source", None)
    for m in old["models"]:
        for key in ("outputs", "precision", "plugin"):
            m.pop(key, None)
    for b in old["blobs"]:
        for key in V2_BLOB_FIELDS:
            b.pop(key, None)
    if old.get("comparison"):
        old["comparison"]["deterministic"].pop("uncertainty", None)
        for b in old["comparison"]["blobs"]:
            for key in V2_COMPARISON_FIELDS:
                b.pop(key, None)
    old["seg"].pop("levels", None)
    for f in old["seg"].get("files", []):
        for seg in f.get("segments", []):
            seg.pop("region", None)
    schema = yaml.safe_load(V1_SCHEMA.read_text())
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(old))
    assert not errors, [e.message for e in errors[:3]]
    return old


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    args = ["--model", model_path("unet-p32"), "--passes", "2", "--case", CASE_DIR]
    run_ok(out / "found", *args)
    run_ok(out / "empty", *args, "--threshold", "50")
    (out / ".logs").mkdir()
    (out / ".logs" / "broken.failed").write_text(
        "exit_code: 3\nerror: stochseg: error: broken-t1n.nii.gz: file is truncated\n")
    (out / ".logs" / "found.log").write_text("a log, not a marker\n")
    return out


def summarize(out):
    p = stochseg("-q", "summarize", out)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [str(out / "cohort-summary.csv"),
                                     str(out / "cohort-summary.yaml")]
    with open(out / "cohort-summary.csv", newline="") as f:
        rows = {r["folder"]: r for r in csv.DictReader(f)}
    return rows, load_yaml((out / "cohort-summary.yaml").read_text())


def test_rows_match_the_reports(cohort):
    rows, doc = summarize(cohort)
    assert sorted(rows) == ["broken", "empty", "found"]
    report = json.loads((cohort / "found" / "report.json").read_text())
    blobs = report["blobs"]
    logits = [b["mean_logit"] for b in blobs]
    row = rows["found"]
    assert row["case_id"] == report["case"]["id"] and row["status"] == "ok"
    assert int(row["blobs"]) == len(blobs) >= 1
    assert float(row["volume_mm3"]) == pytest.approx(sum(b["volume_mm3"] for b in blobs))
    assert float(row["mean_logit_min"]) == pytest.approx(min(logits))
    assert float(row["mean_logit_median"]) == pytest.approx(statistics.median(logits))
    assert float(row["mean_logit_max"]) == pytest.approx(max(logits))
    assert int(row["blobs_mean_logit_gt_0"]) == sum(v > 0 for v in logits)
    assert int(row["blobs_pass_agreement_ge_0_5"]) == sum(
        b["pass_agreement"] >= 0.5 for b in blobs)
    assert row["execution_providers"] == "CPUExecutionProvider"
    assert float(row["total_s"]) == pytest.approx(report["timings_s"]["total"])
    assert float(row["ensemble_s"]) == pytest.approx(report["timings_s"]["ensemble"])
    # zero blobs: counts 0, no confidence figures
    empty = rows["empty"]
    assert (empty["status"], empty["blobs"], empty["mean_logit_median"]) == ("ok", "0", "")
    broken = rows["broken"]
    assert (broken["status"], broken["exit_code"], broken["blobs"]) == ("failed", "3", "")
    assert "file is truncated" in broken["error"]
    t = doc["totals"]
    assert (t["cases"], t["ok"], t["failed"], t["blobs"]) == (3, 2, 1, len(blobs))
    assert t["execution_providers"] == ["CPUExecutionProvider"]
    entry = {c["folder"]: c for c in doc["cases"]}["found"]
    assert entry["result"]["confidence"]["mean_logit_max"] == pytest.approx(max(logits))


def test_rewrites_atomically_and_ignores_staging_folders(cohort, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(cohort, out)
    shutil.copytree(out / "found", out / ".found.partial-1")
    summarize(out)
    rows, _ = summarize(out)  # a second call replaces both files
    assert sorted(rows) == ["broken", "empty", "found"]
    names = sorted(p.name for p in out.iterdir() if p.name.startswith(".cohort"))
    assert names == [], f"temporary files left: {names}"


def test_exit_codes(tmp_path, cohort):
    p = stochseg("summarize", tmp_path / "missing")
    assert p.returncode == 3 and "missing" in error_line(p)
    (tmp_path / "empty").mkdir()
    p = stochseg("summarize", tmp_path / "empty")
    assert p.returncode == 3 and "no <case>/report.json" in error_line(p)
    bad = tmp_path / "bad"
    (bad / "case").mkdir(parents=True)
    (bad / "case" / "report.json").write_text("{")
    p = stochseg("summarize", bad)
    assert p.returncode == 3 and "report.json" in error_line(p)
    # the summary's name is taken by a folder: an output failure
    out = tmp_path / "out"
    shutil.copytree(cohort / "found", out / "found")
    (out / "cohort-summary.csv").mkdir()
    p = stochseg("summarize", out)
    assert p.returncode == 5 and "cohort-summary.csv" in error_line(p)
    p = stochseg("summarize")
    assert p.returncode == 2


# (how the report is spoiled, what the error line must say after the file's name)
SPOILED = {
    "missing": (lambda r: r["blobs"][0].pop("pass_agreement"),
                "report.json: blobs[0]: missing field `pass_agreement`"),
    "wrong-type": (lambda r: r["blobs"][0].update(volume_mm3="large"),
                   "report.json: blobs[0].volume_mm3: invalid type: string \"large\""),
    "top-level-missing": (lambda r: r.pop("timings_s"),
                          "report.json: missing field `timings_s`"),
    "foreign": (lambda r: r["tool"].update(name="other-tool"),
                "report.json: not a stochseg report: tool.name is \"other-tool\""),
    "newer": (lambda r: r.update(schema_version=3),
              "report.json: report schema_version 3; this stochseg reads versions 1 to 2"),
}


@pytest.mark.parametrize("how", sorted(SPOILED))
def test_a_malformed_or_foreign_report_is_refused_naming_the_field(cohort, tmp_path, how):
    spoil, message = SPOILED[how]
    out = tmp_path / "out"
    shutil.copytree(cohort / "found", out / "found")
    report = json.loads((out / "found" / "report.json").read_text())
    spoil(report)
    (out / "found" / "report.json").write_text(json.dumps(report))
    p = stochseg("summarize", out)
    assert p.returncode == 3, p.stderr
    line = error_line(p)
    assert f"stochseg: error: {out / 'found' / message}" in line, line
    assert not (out / "cohort-summary.csv").exists()


def test_a_version_1_report_is_summarized_like_its_version_2(cohort, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(cohort / "found", out / "found")
    shutil.copytree(cohort / "found", out / "old")
    report = json.loads((out / "old" / "report.json").read_text())
    (out / "old" / "report.json").write_text(json.dumps(v1_report(report)))
    rows, _ = summarize(out)
    assert {k: v for k, v in rows["old"].items() if k != "folder"} == \
        {k: v for k, v in rows["found"].items() if k != "folder"}
