"""Reports: JSON Schema (Draft 2020-12) validity, YAML == JSON, and the statistics section
against numpy/scipy on the written mean_logits map.

Every report any test of the suite produces is validated when it is written (conftest.run_ok
calls check_report_files), so a schema violation anywhere fails the test that produced it;
the tests here make the check explicit for the shared runs and prove the validator bites.
"""

from __future__ import annotations

import copy
import json

import jsonschema
import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import (CASE_DIR, REPORT_SCHEMA, REPORTS_CHECKED, brain_mask,
                      check_report_files, differences, load_yaml, model_path,
                      report_validator, run_ok, stochseg)

SHARED = ["stoch_all", "det_crop_all", "det_nocrop_all", "p64_s0", "det_crop_p64",
          "conv3_det"]


def close(a, b, tol=1e-4):
    return abs(float(a) - float(b)) <= tol * max(1.0, abs(float(b)))


def test_schema_file_is_what_the_binary_prints():
    p = stochseg("schema", "report")
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout) == yaml.safe_load(REPORT_SCHEMA.read_text())
    schema = yaml.safe_load(REPORT_SCHEMA.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", SHARED)
def test_report_validates_and_yaml_equals_json(runs, name):
    r = runs.get(name)
    check_report_files(r.out)
    assert r.report_yaml == r.report
    assert json.loads((r.out / "report.json").read_text()) == r.report


def test_validator_rejects_broken_reports(runs):
    """Negative control: the same validation rejects small corruptions of a valid report."""
    good = runs.get("stoch_all").report
    v = report_validator()
    assert not list(v.iter_errors(good))
    assert good["blobs"], "need a report with blobs"
    bad = []
    b = copy.deepcopy(good)
    b["blobs"][0]["voxels"] = 0
    bad.append(b)
    b = copy.deepcopy(good)
    b["statistics"]["brain"]["unexpected"] = 1
    bad.append(b)
    b = copy.deepcopy(good)
    b["blobs"][0]["centroid_mm"] = b["blobs"][0]["centroid_mm"][:2]
    bad.append(b)
    b = copy.deepcopy(good)
    del b["timings_s"]
    bad.append(b)
    b = copy.deepcopy(good)
    b["blobs"][0]["mean_probability"] = 1.5
    bad.append(b)
    for i, b in enumerate(bad):
        assert list(v.iter_errors(b)), f"corruption {i} was accepted"


def expected_distribution(values: np.ndarray, edges) -> dict:
    values = values.astype(np.float64)
    n = values.size
    if n == 0:
        return {"count": 0, "mean": 0.0, "std": 0.0, "skewness": 0.0, "excess_kurtosis": 0.0,
                "counts": np.zeros(len(edges) - 1, int), "within": 0}
    counts, _ = np.histogram(values, bins=np.asarray(edges, dtype=np.float64))
    within = int(((values >= edges[0]) & (values <= edges[-1])).sum())
    return {"count": n, "mean": values.mean(), "std": values.std(),
            "skewness": stats.skew(values, bias=True),
            "excess_kurtosis": stats.kurtosis(values, fisher=True, bias=True),
            "counts": counts, "within": within}


def check_distribution(reported: dict, values: np.ndarray, what: str):
    h = reported["histogram"]
    edges, counts = h["edges"], h["counts"]
    assert len(counts) == len(edges) - 1, what
    assert all(a < b for a, b in zip(edges, edges[1:])), f"{what}: edges not increasing"
    exp = expected_distribution(values, edges)
    assert reported["count"] == exp["count"], what
    for key in ("mean", "std", "skewness", "excess_kurtosis"):
        assert close(reported[key], exp[key]), (what, key, reported[key], exp[key])
    assert sum(counts) == exp["within"], (what, sum(counts), exp["within"])
    assert list(counts) == [int(c) for c in exp["counts"]], f"{what}: histogram differs"


@pytest.mark.parametrize("name", SHARED)
def test_statistics_match_numpy(runs, channels, name):
    r = runs.get(name)
    rep = r.report
    assert rep["ensemble"]["aggregation"] == "mean_logit"
    logit = r.map("mean_logits")
    brain = brain_mask(channels)
    st = rep["statistics"]
    assert st["brain_voxels"] == int(brain.sum()) == st["brain"]["count"]
    check_distribution(st["brain"], logit[brain], f"{name} brain")
    # the brain histogram covers the whole brain distribution
    assert sum(st["brain"]["histogram"]["counts"]) == st["brain"]["count"]
    thr = np.float32(rep["thresholds"]["logit"])
    positive = logit[logit > thr]
    assert st["positive_voxels"] == positive.size == st["positive"]["count"]
    check_distribution(st["positive"], positive, f"{name} positive")


def test_yaml_report_is_plain_yaml(runs):
    """report.yaml needs no custom tags."""
    r = runs.get("p64_s0")
    text = (r.out / "report.yaml").read_text()
    assert "!!" not in text and load_yaml(text) == r.report


def test_yaml_report_reads_the_same_with_yaml_1_1_loaders(tmp_path):
    """report.yaml must give report.json's data with plain `yaml.safe_load` (PyYAML, YAML 1.1),
    the loader most Python consumers use.  YAML 1.1 reads a float written without a dot and
    with an exponent ("4e-8") as the *string* "4e-8"; the binary writes such floats for small
    values (e.g. timings_s.ensemble_noise of a deterministic run, where no noise is drawn);
    written with a dot (4.0e-8) they read as floats under both YAML 1.1 and 1.2.
    Checked on a fresh deterministic run and on every report the suite produced so far."""
    run_ok(tmp_path / "out", "--model",
           f"{model_path('identity-plus-one.onnx')}:16x32x32", "--case", CASE_DIR,
           "--deterministic")
    bad = {}
    for out in dict.fromkeys(REPORTS_CHECKED):
        data = json.loads((out / "report.json").read_text())
        diffs = differences(data, yaml.safe_load((out / "report.yaml").read_text()))
        if diffs:
            bad[str(out)] = diffs
    assert not bad, (f"{len(bad)} of {len(set(REPORTS_CHECKED))} report.yaml files read "
                     f"differently by yaml.safe_load, e.g. " + "; ".join(
                         f"{k}: {v[:3]}" for k, v in list(bad.items())[:3]))
