"""`stochseg evaluate` (issue 8, item 3) against tests/python/evaluate_reference.py
(numpy / scipy / scikit-learn), on a synthetic cohort whose true and false blobs are known by
construction, and end to end on a real run of the small case."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import (CASE_DIR, CASE_ID, case_args, error_line, load_yaml, model_path,
                      report_validator, run_ok, stochseg)

HERE = Path(__file__).resolve().parent


def reference_module():
    spec = importlib.util.spec_from_file_location("evaluate_reference",
                                                  HERE / "evaluate_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cube(a, lo, hi, value):
    a[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value


def save(path: Path, data: np.ndarray, spacing=(1.0, 1.0, 1.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.int32), np.diag([*spacing, 1.0])), str(path))


@pytest.fixture(scope="module")
def template(runs):
    """A real run's report, the mould of the synthetic cohorts' reports."""
    return runs.get("p64_s0").report


def binary_entropy(logit: float) -> float:
    """The entropy (bits) of the Bernoulli distribution whose log-odds is `logit`."""
    p = 1 / (1 + math.exp(-logit))
    return float(-sum(q * math.log2(q) for q in (p, 1 - p) if q > 0))


def synthetic_report(template: dict, case: str, blobs: list[dict],
                     deterministic: list[float] | None = None) -> dict:
    """A complete report of case `case` whose primary region has `blobs` (dicts with id,
    voxels, mean_logit, mean_probability), with a comparison when `deterministic` gives each
    blob's deterministic mean logit; every other field is the template's. It must conform to
    the report schema."""
    r = copy.deepcopy(template)
    r["case"]["id"] = case
    for key in ("comparison", "regions", "label_map"):
        r.pop(key, None)
    mould = template["blobs"][0]
    r["blobs"] = [{**mould, "seg_segment_number": None, **b,
                   "volume_mm3": float(b["voxels"])} for b in blobs]
    for b in r["blobs"]:
        if b["seg_segment_number"] is None:
            del b["seg_segment_number"]
    if deterministic is not None:
        r["comparison"] = {
            "deterministic": {"passes_per_model": 1, "sigma": 0.0,
                              "statistics": template["statistics"], "model_statistics": {},
                              "blobs_found": len(blobs),
                              "uncertainty": template["uncertainty"]},
            "blobs": [{"id": b["id"], "voxels": b["voxels"],
                       "stochastic_mean_logit": b["mean_logit"],
                       "deterministic_mean_logit": d, "stochastic_pass_agreement": 1.0,
                       "deterministic_pass_agreement": 1.0,
                       "deterministic_model_mean_logits": {},
                       "stochastic_mean_entropy": binary_entropy(b["mean_logit"]),
                       "deterministic_mean_entropy": binary_entropy(d),
                       "stochastic_mean_mutual_information": 0.0,
                       "deterministic_mean_mutual_information": 0.0,
                       "deterministic_mean_logit_variance_between": 0.0}
                      for b, d in zip(blobs, deterministic)]}
    errors = list(report_validator().iter_errors(r))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:3]]
    return r


def write_report(folder: Path, report: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report))


# (GT lesions as (lo, hi, label)), (blobs as (lo, hi, mean_logit, deterministic, true?))
CASES = {
    "SYN-A": ([((2, 2, 2), (5, 5, 5), 1), ((10, 10, 10), (13, 13, 13), 2),
               ((15, 2, 15), (18, 5, 18), 3)],
              [((3, 3, 3), (6, 6, 6), 6.0, 5.0, True),
               ((10, 10, 10), (12, 12, 12), 2.0, 3.0, True),
               ((2, 15, 2), (4, 18, 4), 3.0, 0.5, False),
               ((16, 16, 2), (18, 18, 4), 0.5, 0.2, False)]),
    "SYN-B": ([((5, 5, 5), (9, 9, 9), 2)],
              [((6, 6, 6), (8, 8, 8), 4.0, 4.5, True),
               ((14, 14, 14), (16, 16, 16), 1.0, 2.5, False)]),
}
# SYN-A's cubes are 27 mm3; under 3 dilations its labels 2 and 3 (2 voxels apart along i and k)
# form one 54 mm3 lesion, label 1 leaves the lesion-wise score (default threshold 50)
KNOWN = {"SYN-A": dict(gt_lesions=2, small_lesions=1, lesion_tp=1, lesion_fn=0, lesion_fp=2,
                       lesion_dice=(2 * 8 / (54 + 8)) / 3, true_blobs=2, false_blobs=2),
         "SYN-B": dict(gt_lesions=1, small_lesions=0, lesion_tp=1, lesion_fn=0, lesion_fp=1,
                       lesion_dice=(2 * 8 / (64 + 8)) / 2, true_blobs=1, false_blobs=1)}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, template):
    root = tmp_path_factory.mktemp("evaluate")
    cohort, gt_dir = root / "cohort", root / "gt"
    for case, (lesions, blobs) in CASES.items():
        gt = np.zeros((20, 20, 20))
        for lo, hi, value in lesions:
            cube(gt, lo, hi, value)
        save(gt_dir / case / f"{case}-seg.nii.gz", gt)
        labels = np.zeros((20, 20, 20))
        entries, comparison = [], []
        for i, (lo, hi, logit, det, _) in enumerate(blobs, start=1):
            cube(labels, lo, hi, i)
            entries.append({"id": i, "voxels": int(np.prod(np.subtract(hi, lo))),
                            "mean_logit": logit,
                            "mean_probability": float(1 / (1 + np.exp(-logit)))})
            comparison.append({"id": i, "deterministic_mean_logit": det})
        save(cohort / case / "labels.nii.gz", labels)
        write_report(cohort / case, synthetic_report(
            template, case, entries, [c["deterministic_mean_logit"] for c in comparison]))
    proc = stochseg("evaluate", cohort, "--gt", gt_dir, "--bootstrap", "200", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    return cohort, gt_dir, load_yaml((cohort / "evaluation.yaml").read_text())


def test_known_counts_are_recovered(synthetic):
    cohort, _, ev = synthetic
    by_case = {c["case"]: c for c in ev["cases"]}
    for case, known in KNOWN.items():
        for key, value in known.items():
            assert by_case[case][key] == pytest.approx(value, abs=1e-12), (case, key)
    rows = list(csv.DictReader((cohort / "evaluation-blobs.csv").open()))
    truth = {(r["case"], int(r["id"])): r["is_true"] == "true" for r in rows}
    for case, (_, blobs) in CASES.items():
        for i, b in enumerate(blobs, start=1):
            assert truth[(case, i)] == b[4], (case, i)
    t = ev["totals"]
    assert (t["blobs"], t["true_blobs"], t["false_blobs"]) == (6, 3, 3)


def test_metrics_equal_the_scikit_learn_reference(synthetic):
    cohort, gt_dir, ev = synthetic
    ref = reference_module().reference(cohort, gt_dir)
    for mine, theirs in zip(ev["cases"], ref["cases"]):
        assert mine["case"] == theirs["case"]
        assert mine["dice"] == pytest.approx(theirs["dice"], abs=1e-12)
    detectors = {d["score"]: d for d in ev["detectors"]}
    assert set(detectors) == set(ref["detectors"]) == {"mean_logit", "deterministic_mean_logit"}
    for name, r in ref["detectors"].items():
        d = detectors[name]
        assert d["auc"]["value"] == pytest.approx(r["auc"], abs=1e-12)
        assert d["average_precision"]["value"] == pytest.approx(r["average_precision"], abs=1e-12)
        assert d["youden_threshold"] == pytest.approx(r["youden_threshold"])
        assert d["youden_j"] == pytest.approx(r["youden_j"])
        lo, hi = d["auc"]["ci95"]
        assert 0 <= lo <= hi <= 1
    # by construction: true {6, 4, 2} vs false {3, 1, 0.5}: 8 of 9 pairs ordered -> AUC 8/9
    assert detectors["mean_logit"]["auc"]["value"] == pytest.approx(8 / 9)
    assert detectors["deterministic_mean_logit"]["auc"]["value"] == pytest.approx(1.0)
    assert sum(b["blobs"] for b in ev["calibration"]) == 6


def test_roc_and_calibration_plots_show_the_reference_curves(synthetic):
    """evaluation-roc.png and evaluation-calibration.png: 420 x 440 PNGs; every point of
    scikit-learn's ROC curve (one per threshold) of the stochastic and the deterministic blob
    confidence is marked in its colour where the plot maps it, and so is every calibration bin."""
    from sklearn.metrics import roc_curve
    from test_compare import BLUE, ORANGE, read_png

    cohort, _, ev = synthetic
    rows = list(csv.DictReader((cohort / "evaluation-blobs.csv").open()))
    y = np.array([r["is_true"] == "true" for r in rows])

    def pixel(p):  # the plot's box: 360 px from (44, 44), y up
        return round(44 + 359 - p[1] * 359), round(44 + p[0] * 359)

    roc = read_png(cohort / "evaluation-roc.png")
    assert roc.shape == (440, 420, 3)
    for score, colours in (("mean_logit", (BLUE, ORANGE)),
                           ("deterministic_mean_logit", (ORANGE,))):
        fpr, tpr, _ = roc_curve(y, [float(r[score]) for r in rows], drop_intermediate=False)
        for point in zip(fpr, tpr):
            got = tuple(roc[pixel(point)])
            assert got in colours, (score, point, got)
    calibration = read_png(cohort / "evaluation-calibration.png")
    assert calibration.shape == (440, 420, 3)
    for b in ev["calibration"]:
        if b["blobs"]:
            assert tuple(calibration[pixel((b["mean_probability"], b["fraction_true"]))]) == BLUE


def test_bootstrap_is_seeded(synthetic, tmp_path):
    cohort, gt_dir, ev = synthetic
    out = tmp_path / "again"
    proc = stochseg("evaluate", cohort, "--gt", gt_dir, "--bootstrap", "200", "--seed", "3",
                    "--out", out)
    assert proc.returncode == 0, proc.stderr
    again = load_yaml((out / "evaluation.yaml").read_text())
    assert again["detectors"] == ev["detectors"]


def test_a_real_run_end_to_end(tmp_path):
    cohort = tmp_path / "cohort"
    run = run_ok(cohort / CASE_ID, "--model", model_path("unet-p32"), *case_args(),
                 "--passes", "2", "--threshold", "4", "--compare-deterministic")
    proc = stochseg("evaluate", cohort, "--gt", CASE_DIR, "--gt-pattern", "{case}-seg.nii.gz",
                    "--bootstrap", "50")
    assert proc.returncode == 0, proc.stderr
    ev = load_yaml((cohort / "evaluation.yaml").read_text())
    ref = reference_module().reference(cohort, CASE_DIR, "{case}-seg.nii.gz")
    (case,) = ev["cases"]
    assert case["dice"] == pytest.approx(ref["cases"][0]["dice"], abs=1e-12)
    for key in LESION_KEYS:
        assert case[key] == ref["cases"][0][key], key
    assert case["lesion_dice"] == pytest.approx(ref["cases"][0]["lesion_dice"], abs=1e-9)
    assert case["blobs"] == len(run.report["blobs"])
    assert case["true_blobs"] == ref["cases"][0]["true_blobs"]


def test_a_malformed_report_is_refused_naming_the_file_and_field(synthetic, tmp_path):
    """A report without a field evaluate reads is refused (exit 3), never read as 0."""
    cohort, gt_dir, _ = synthetic
    copy_ = tmp_path / "cohort"
    shutil.copytree(cohort, copy_)
    report = json.loads((copy_ / "SYN-B" / "report.json").read_text())
    del report["blobs"][1]["mean_logit"]
    (copy_ / "SYN-B" / "report.json").write_text(json.dumps(report))
    proc = stochseg("evaluate", copy_, "--gt", gt_dir, "--out", tmp_path / "o")
    assert proc.returncode == 3, proc.stderr
    assert error_line(proc).endswith(
        f"{copy_ / 'SYN-B' / 'report.json'}: blobs[1]: missing field `mean_logit`")
    assert not (tmp_path / "o" / "evaluation.yaml").exists()


def test_version_1_reports_evaluate_as_their_version_2(synthetic, tmp_path):
    from test_summarize import v1_report

    cohort, gt_dir, ev = synthetic
    old = tmp_path / "cohort"
    shutil.copytree(cohort, old, ignore=shutil.ignore_patterns("evaluation*"))
    for folder in old.iterdir():
        report = json.loads((folder / "report.json").read_text())
        (folder / "report.json").write_text(json.dumps(v1_report(report)))
    proc = stochseg("evaluate", old, "--gt", gt_dir, "--bootstrap", "200", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    again = load_yaml((old / "evaluation.yaml").read_text())
    assert again == ev


def test_missing_ground_truth_is_an_input_error(synthetic, tmp_path):
    cohort, _, _ = synthetic
    proc = stochseg("evaluate", cohort, "--gt", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert proc.returncode == 3, proc.stderr
    assert "nowhere" in proc.stderr


# Lesion-wise rule with GT dilation: (spacing_mm, GT cubes (lo, hi), blobs (lo, hi)), nibabel
# (i, j, k) indices, hi exclusive.
DILATION_CASES = {
    # A and B 2 voxels apart (one lesion from 1 dilation on); C with a blob 2 voxels past it
    # (touches C's 3-times dilation, not C); D 27 mm3 (small) under a blob; a far blob
    "DIL-A": ((1.0, 1.0, 1.0),
              [((2, 2, 2), (6, 6, 6)), ((2, 2, 8), (6, 6, 12)), ((2, 2, 20), (6, 6, 24)),
               ((14, 14, 30), (17, 17, 33))],
              [((2, 2, 2), (6, 6, 6)), ((2, 2, 26), (4, 4, 28)), ((14, 14, 30), (16, 16, 32)),
               ((18, 2, 2), (20, 4, 4))]),
    # 2 mm3 voxels: E 27 voxels = 54 mm3 (kept, missed), F 64 voxels half covered, G 16 mm3
    "DIL-B": ((1.0, 1.0, 2.0),
              [((4, 4, 4), (7, 7, 7)), ((14, 14, 14), (18, 18, 18)), ((2, 18, 2), (4, 20, 4))],
              [((14, 14, 14), (18, 18, 16))]),
    "DIL-EMPTY": ((1.0, 1.0, 1.0), [], []),
}
# by hand: (gt_lesions, small_lesions, tp, fn, fp, lesion Dice, blob truth) per rule
DILATION_KNOWN = {
    (3, 50.0): {"DIL-A": (3, 1, 2, 0, 1, (2 * 64 / 192) / 3, [True, True, True, False]),
                "DIL-B": (3, 1, 1, 1, 0, (2 * 32 / 96) / 2, [True]),
                "DIL-EMPTY": (0, 0, 0, 0, 0, 1.0, [])},
    (0, 50.0): {"DIL-A": (4, 1, 1, 2, 2, 1 / 5, [True, False, True, False]),
                "DIL-B": (3, 1, 1, 1, 0, (2 * 32 / 96) / 2, [True]),
                "DIL-EMPTY": (0, 0, 0, 0, 0, 1.0, [])},
}
LESION_KEYS = ("gt_lesions", "small_lesions", "lesion_tp", "lesion_fn", "lesion_fp")


@pytest.fixture(scope="module")
def dilation_cohort(tmp_path_factory, template):
    root = tmp_path_factory.mktemp("dilation")
    cohort, gt_dir = root / "cohort", root / "gt"
    for case, (spacing, lesions, blobs) in DILATION_CASES.items():
        gt, labels = np.zeros((24, 24, 40)), np.zeros((24, 24, 40))
        for lo, hi in lesions:
            cube(gt, lo, hi, 2)
        entries = []
        for i, (lo, hi) in enumerate(blobs, start=1):
            cube(labels, lo, hi, i)
            entries.append({"id": i, "voxels": int(np.prod(np.subtract(hi, lo))),
                            "mean_logit": float(i), "mean_probability": 0.5})
        save(gt_dir / case / f"{case}-seg.nii.gz", gt, spacing)
        save(cohort / case / "labels.nii.gz", labels, spacing)
        write_report(cohort / case, synthetic_report(template, case, entries))
    return cohort, gt_dir


def evaluate_with(cohort, gt_dir, out, dilation, volume):
    proc = stochseg("evaluate", cohort, "--gt", gt_dir, "--out", out, "--bootstrap", "10",
                    "--gt-dilation", str(dilation), "--lesion-min-volume-mm3", str(volume))
    assert proc.returncode == 0, proc.stderr
    return load_yaml((out / "evaluation.yaml").read_text())


@pytest.mark.parametrize("dilation,volume", [(3, 50.0), (0, 50.0), (1, 20.0), (2, 60.0)])
def test_lesion_wise_rule_equals_the_scipy_reference(dilation_cohort, tmp_path, dilation, volume):
    cohort, gt_dir = dilation_cohort
    ev = evaluate_with(cohort, gt_dir, tmp_path, dilation, volume)
    ref = reference_module().reference(cohort, gt_dir, gt_dilation=dilation,
                                       min_volume_mm3=volume)
    assert (ev["gt_dilation"], ev["lesion_min_volume_mm3"]) == (dilation, volume)
    assert f"dilated {dilation} times" in ev["rule"]
    assert [c["case"] for c in ev["cases"]] == [c["case"] for c in ref["cases"]]
    for mine, theirs in zip(ev["cases"], ref["cases"]):
        for key in LESION_KEYS + ("true_blobs",):
            assert mine[key] == theirs[key], (mine["case"], key)
        assert mine["lesion_dice"] == pytest.approx(theirs["lesion_dice"], abs=1e-9)
        if theirs["lesion_sensitivity"] is None:
            assert mine["lesion_sensitivity"] is None
        else:
            assert mine["lesion_sensitivity"] == pytest.approx(theirs["lesion_sensitivity"])
    rows = list(csv.DictReader((tmp_path / "evaluation-blobs.csv").open()))
    assert [r["is_true"] == "true" for r in rows] == [b["true"] for b in ref["blobs"]]
    known = DILATION_KNOWN.get((dilation, volume))
    for c in ev["cases"] if known else []:
        *counts, lesion_dice, truth = known[c["case"]]
        assert [c[k] for k in LESION_KEYS] == counts, c["case"]
        assert c["lesion_dice"] == pytest.approx(lesion_dice, abs=1e-12), c["case"]
        assert [r["is_true"] == "true" for r in rows if r["case"] == c["case"]] == truth
    t = ev["totals"]
    for key in LESION_KEYS:
        assert t[key] == sum(c[key] for c in ev["cases"]), key
    case_rows = list(csv.DictReader((tmp_path / "evaluation-cases.csv").open()))
    assert {(int(r["gt_dilation"]), float(r["lesion_min_volume_mm3"])) for r in case_rows} \
        == {(dilation, volume)}


@pytest.mark.parametrize("volume", ["-1", "nan", "inf"])
def test_a_bad_lesion_volume_is_a_usage_error(dilation_cohort, tmp_path, volume):
    cohort, gt_dir = dilation_cohort
    proc = stochseg("evaluate", cohort, "--gt", gt_dir, "--out", tmp_path,
                    f"--lesion-min-volume-mm3={volume}")
    assert proc.returncode == 2, proc.stderr
    assert "--lesion-min-volume-mm3" in proc.stderr


# --------------------------------------------------------------------------------------------
# regions: runs of a four-class softmax model (WT, TC, ET and the BraTS label map) beside a
# one-region run, against tests/python/evaluate_reference.py
# --------------------------------------------------------------------------------------------
SOFTMAX_OUTPUTS = {"softmax": [{"name": "background", "label": 0}, {"name": "NETC", "label": 1},
                               {"name": "SNFH", "label": 2}, {"name": "ET", "label": 3}]}
# class logits (background, NETC, SNFH, ET) from the z-scored channels (t1n, t1c, t2w, t2f) and a
# bias: a multinomial logistic regression on the small case's brain voxels, rounded and made
# less sure, so the small case's label map has Dice about 0.64 / 0.99 / 0.99 and the noise
# passes give some false blobs
SOFTMAX_WEIGHTS = np.array([[1, 0, -2, -4], [-2, 0, 1, 1], [1, -2, 1, 3], [0, 2, 1, 0]],
                           np.float32)
SOFTMAX_BIAS = np.array([7, -1, -3, -1], np.float32)
PHANTOM_ID = "PHANTOM-00011-000"


def softmax_model(path: Path) -> Path:
    """A pointwise (1x1x1 Conv) four-class model, 4 input channels -> 4 class logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "D", "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "D", "H", "W"])
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, 1, 1])
    graph = helper.make_graph(
        [node], "four_classes", [x], [y],
        [numpy_helper.from_array(SOFTMAX_WEIGHTS.reshape(4, 4, 1, 1, 1), "w"),
         numpy_helper.from_array(SOFTMAX_BIAS, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def region_cohort(tmp_path_factory):
    """Runs: the four-class model on the small case and on a second phantom (with comparison),
    the same with nothing above the threshold (every region's prediction empty), and the demo
    one-logit model on the small case (one region, WT, every non-zero label). The second
    phantom's GT has its ET relabelled NETC, so its ET GT is empty."""
    import subprocess
    import sys

    from conftest import ROOT, write_config

    root = tmp_path_factory.mktemp("regions")
    phantom = root / "phantom"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "phantom.py"), "--out", str(phantom),
                    "--case-id", PHANTOM_ID, "--shape", "64", "72", "40", "--spacing", "1", "1",
                    "1", "--seed", "11", "--tumors", "2"], check=True, capture_output=True)
    gt_dir = root / "gt"
    gt_dir.mkdir()
    shutil.copy(CASE_DIR / f"{CASE_ID}-seg.nii.gz", gt_dir)
    seg = nib.load(str(phantom / f"{PHANTOM_ID}-seg.nii.gz"))
    relabelled = np.asarray(seg.dataobj).copy()
    relabelled[relabelled == 3] = 1
    nib.save(nib.Nifti1Image(relabelled, seg.affine, seg.header),
             str(gt_dir / f"{PHANTOM_ID}-seg.nii.gz"))
    config = write_config(root / "four.yaml", [{
        "path": str(softmax_model(root / "four.onnx")), "patch_size": [16, 32, 32],
        "outputs": SOFTMAX_OUTPUTS}])
    cohort = root / "cohort"
    common = ["--passes", "2", "--seed", "1", "--compare-deterministic"]
    runs = {
        "a-four-small": run_ok(cohort / "a-four-small", "--pipeline", config, *case_args(),
                               *common),
        "b-four-phantom": run_ok(cohort / "b-four-phantom", "--pipeline", config,
                                 "--case", phantom, *common),
        "c-four-empty": run_ok(cohort / "c-four-empty", "--pipeline", config, *case_args(),
                               *common, "--threshold", "50"),
        "d-one-region": run_ok(cohort / "d-one-region", "--model", model_path("unet-p32"),
                               *case_args(), *common, "--threshold", "4"),
    }
    proc = stochseg("evaluate", cohort, "--gt", gt_dir, "--gt-pattern", "{case}-seg.nii.gz",
                    "--bootstrap", "100", "--seed", "5")
    assert proc.returncode == 0, proc.stderr
    ev = load_yaml((cohort / "evaluation.yaml").read_text())
    ref = reference_module().reference(cohort, gt_dir, "{case}-seg.nii.gz")
    return cohort, gt_dir, runs, ev, ref


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


REGION_KEYS = ("gt_voxels", "predicted_voxels", "gt_lesions", "small_lesions", "lesion_tp",
               "lesion_fn", "lesion_fp", "blobs", "true_blobs")


def test_the_runs_give_the_regions_and_edge_cases_the_test_needs(region_cohort):
    _, _, runs, ev, _ = region_cohort
    assert sorted(runs["a-four-small"].report["regions"]) == ["ET", "TC", "WT"]
    assert runs["a-four-small"].report["label_map"]["rule"] == "argmax"
    assert "regions" not in runs["d-one-region"].report
    assert sorted(ev["regions"]) == ["ET", "TC", "WT"]
    rows = {(r["folder"], r["region"]): r for name in ev["regions"]
            for r in ev["regions"][name]["cases"]}
    assert len(rows) == 3 * 3 + 1
    # every region found something in the small case, nothing where nothing passed the threshold
    assert all(rows[("a-four-small", r)]["predicted_voxels"] > 0 for r in ("WT", "TC", "ET"))
    assert all(rows[("c-four-empty", r)]["predicted_voxels"] == 0 for r in ("WT", "TC", "ET"))
    assert rows[("b-four-phantom", "ET")]["gt_voxels"] == 0
    assert rows[("b-four-phantom", "ET")]["predicted_voxels"] > 0
    assert rows[("d-one-region", "WT")]["labels"] == "nonzero"
    assert rows[("a-four-small", "TC")]["labels"] == "1;3"


def test_every_region_equals_the_reference(region_cohort):
    cohort, _, _, ev, ref = region_cohort
    for name, theirs in ref["regions"].items():
        mine = ev["regions"][name]
        assert [(c["folder"], c["case"]) for c in mine["cases"]] == \
            [(c["folder"], c["case"]) for c in theirs["cases"]], name
        for m, t in zip(mine["cases"], theirs["cases"]):
            where = (name, m["folder"])
            for key in REGION_KEYS:
                assert m[key] == t[key], (where, key)
            assert m["dice"] == pytest.approx(t["dice"], abs=1e-12), where
            assert m["lesion_dice"] == pytest.approx(t["lesion_dice"], abs=1e-12), where
            assert m["lesion_sensitivity"] == (
                None if t["lesion_sensitivity"] is None
                else pytest.approx(t["lesion_sensitivity"], abs=1e-12)), where
        totals = mine["totals"]
        assert totals["mean_dice"] == pytest.approx(np.mean([c["dice"] for c in theirs["cases"]]))
        assert totals["mean_lesion_dice"] == pytest.approx(
            np.mean([c["lesion_dice"] for c in theirs["cases"]]))
        assert (totals["blobs"], totals["true_blobs"]) == (
            len(theirs["blobs"]), sum(b["true"] for b in theirs["blobs"]))
        detectors = {d["score"]: d for d in mine["detectors"]}
        assert set(theirs["detectors"]) <= set(detectors), name
        for score, r in theirs["detectors"].items():
            d = detectors[score]
            assert d["auc"]["value"] == pytest.approx(r["auc"], abs=1e-12), (name, score)
            assert d["average_precision"]["value"] == pytest.approx(
                r["average_precision"], abs=1e-12), (name, score)
            assert d["youden_threshold"] == pytest.approx(r["youden_threshold"]), (name, score)
            assert d["youden_j"] == pytest.approx(r["youden_j"]), (name, score)
        # the blob calibration table: 10 bins of mean_probability, the last including 1
        p = np.array([b["mean_probability"] for b in theirs["blobs"]])
        y = np.array([b["true"] for b in theirs["blobs"]])
        which = np.minimum((p * 10).astype(int), 9)
        for i, b in enumerate(mine["calibration"]):
            assert b["blobs"] == int((which == i).sum()), (name, i)
            if b["blobs"]:
                assert b["mean_probability"] == pytest.approx(p[which == i].mean(), abs=1e-12)
                assert b["fraction_true"] == pytest.approx(y[which == i].mean(), abs=1e-12)
    # some region has both true and false blobs, and a deterministic comparison
    assert any("deterministic_mean_logit" in r["detectors"] for r in ref["regions"].values())
    blobs = read_csv(cohort / "evaluation-region-blobs.csv")
    truth = {(b["region"], b["folder"], int(b["id"])): b["is_true"] == "true" for b in blobs}
    overlap = {(b["region"], b["folder"], int(b["id"])): int(b["overlap_voxels"]) for b in blobs}
    expected = [b for r in ref["regions"].values() for b in r["blobs"]]
    assert len(blobs) == len(expected) == len(truth)
    for b in expected:
        key = (b["region"], b["folder"], b["id"])
        assert truth[key] == b["true"] and overlap[key] == b["overlap_voxels"], key


def test_the_primary_region_keeps_todays_keys_and_columns(region_cohort):
    cohort, _, _, ev, ref = region_cohort
    assert [c["folder"] for c in ev["cases"]] == [c["folder"] for c in ref["cases"]]
    wt = {c["folder"]: c for c in ev["regions"]["WT"]["cases"]}
    for c in ev["cases"]:
        for key in ("dice", "lesion_dice", "gt_lesions", "lesion_tp", "lesion_fp", "blobs",
                    "true_blobs"):
            assert c[key] == wt[c["folder"]][key], (c["folder"], key)
    assert ev["totals"] == ev["regions"]["WT"]["totals"]
    with open(cohort / "evaluation-cases.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["folder", "case", "dice", "gt_lesions", "small_lesions", "lesion_tp",
                      "lesion_fn", "lesion_fp", "lesion_dice", "lesion_sensitivity",
                      "gt_dilation", "lesion_min_volume_mm3", "blobs", "true_blobs",
                      "false_blobs"]
    with open(cohort / "evaluation-blobs.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["case", "id", "voxels", "overlap_voxels", "is_true", "mean_logit",
                      "mean_probability", "deterministic_mean_logit"]
    assert len(read_csv(cohort / "evaluation-blobs.csv")) == len(ref["blobs"])
    # the per-region CSV is the YAML's rows
    rows = read_csv(cohort / "evaluation-regions.csv")
    yaml_rows = [r for name in ev["regions"] for r in ev["regions"][name]["cases"]]
    assert len(rows) == len(yaml_rows)
    by_key = {(r["folder"], r["region"]): r for r in yaml_rows}
    for r in rows:
        y = by_key[(r["folder"], r["region"])]
        assert float(r["dice"]) == pytest.approx(y["dice"], abs=1e-15)
        assert int(r["true_blobs"]) == y["true_blobs"]


def test_label_map_dice_per_label_equals_the_reference(region_cohort):
    cohort, _, _, ev, ref = region_cohort
    mine = ev["label_map"]["cases"]
    assert [(r["folder"], r["name"]) for r in mine] == [(r["folder"], r["name"])
                                                         for r in ref["labels"]]
    assert {r["name"] for r in mine} == {"NETC", "SNFH", "ET"}
    for m, t in zip(mine, ref["labels"]):
        assert (m["label"], m["gt_voxels"], m["predicted_voxels"]) == \
            (t["label"], t["gt_voxels"], t["predicted_voxels"])
        assert m["dice"] == pytest.approx(t["dice"], abs=1e-12)
    for name, mean in ev["label_map"]["mean_dice"].items():
        assert mean == pytest.approx(np.mean([t["dice"] for t in ref["labels"]
                                              if t["name"] == name]))
    assert len(read_csv(cohort / "evaluation-labels.csv")) == len(mine)


# --------------------------------------------------------------------------------------------
# uncertainty: QU-BraTS, retention and voxel calibration from synthetic uncertainty maps written
# into copies of the region cohort's runs, against evaluate_reference.uncertainty_reference
# --------------------------------------------------------------------------------------------
def from_probability(folder: Path, region_file: str) -> np.ndarray:
    """100 x (1 - |2p - 1|), rounded: 0 where the run is sure, 100 at p = 0.5."""
    p = np.asarray(nib.load(str(folder / region_file)).dataobj, dtype=np.float64)
    return np.rint(100 * (1 - np.abs(2 * p - 1)))


def probability_file(region: str) -> str:
    return "probability.nii.gz" if region == "WT" else f"probability-{region}.nii.gz"


# (folder, region) -> how its uncertainty map is made: the run's own probability, all certain
# (zeros), or random whole numbers 0-100
MAPS = {
    ("a-four-small", "WT"): "probability", ("a-four-small", "TC"): "certain",
    ("a-four-small", "ET"): "probability",
    ("b-four-phantom", "WT"): "random", ("b-four-phantom", "TC"): "probability",
    ("b-four-phantom", "ET"): "probability",  # an empty GT
    ("c-four-empty", "WT"): "probability", ("c-four-empty", "TC"): "probability",  # nothing
    ("c-four-empty", "ET"): "probability",                                         # predicted
    ("d-one-region", "WT"): "probability",
}


def write_uncertainty(folder: Path, region: str, how: str, rng) -> None:
    labels = nib.load(str(folder / "labels.nii.gz"))
    if how == "probability":
        u = from_probability(folder, probability_file(region))
    elif how == "certain":
        u = np.zeros(labels.shape)
    else:
        u = rng.integers(0, 101, labels.shape)
    nib.save(nib.Nifti1Image(u.astype(np.uint8), labels.affine),
             str(folder / f"uncertainty-{region}.nii.gz"))


@pytest.fixture(scope="module")
def uncertainty_cohort(region_cohort, tmp_path_factory):
    """The region cohort's runs with the maps of MAPS, and `e-no-maps`: the one-region run
    without an uncertainty map (its probability map kept)."""
    cohort, gt_dir, runs, _, _ = region_cohort
    root = tmp_path_factory.mktemp("uncertainty")
    ucohort = root / "cohort"
    for name in runs:
        shutil.copytree(cohort / name, ucohort / name)
    shutil.copytree(cohort / "d-one-region", ucohort / "e-no-maps")
    for old in ucohort.glob("*/uncertainty-*.nii.gz"):
        old.unlink()
    rng = np.random.default_rng(0)
    for (folder, region), how in MAPS.items():
        write_uncertainty(ucohort / folder, region, how, rng)
    proc = stochseg("evaluate", ucohort, "--gt", gt_dir, "--gt-pattern", "{case}-seg.nii.gz",
                    "--bootstrap", "20")
    assert proc.returncode == 0, proc.stderr
    ev = load_yaml((ucohort / "evaluation.yaml").read_text())
    ref = reference_module().uncertainty_reference(ucohort, gt_dir, "{case}-seg.nii.gz")
    return ucohort, gt_dir, proc, ev, ref


def region_rows(ev) -> dict:
    return {(r["folder"], r["region"]): r for name in ev["regions"]
            for r in ev["regions"][name]["cases"]}


def test_per_case_uncertainty_measures_equal_the_reference(uncertainty_cohort):
    cohort, _, _, ev, ref = uncertainty_cohort
    rows = region_rows(ev)
    assert set(ref["rows"]) == set(rows)  # every region has a probability map
    for key, r in ref["rows"].items():
        mine = rows[key]
        if "qubrats" in r:
            q = r["qubrats"]
            assert mine["qubrats_score"] == pytest.approx(q["score"], abs=1e-12), key
            for k in ("auc_dice", "auc_ftp", "auc_ftn"):
                assert mine[f"qubrats_{k}"] == pytest.approx(q[k], abs=1e-12), (key, k)
            assert mine["retention_auc"] == pytest.approx(r["retention"]["auc"], abs=1e-12), key
        else:
            assert mine["qubrats_score"] is None and mine["retention_auc"] is None, key
        assert mine["ece"] == pytest.approx(r["ece"], abs=1e-12), key
    curves = read_csv(cohort / "evaluation-qubrats.csv")
    assert len(curves) == 41 * len(MAPS)
    for c in curves:
        q = ref["rows"][(c["folder"], c["region"])]["qubrats"]
        i = q["thresholds"].index(float(c["threshold"]))
        for k in ("dice", "ftp_ratio", "ftn_ratio"):
            assert float(c[k]) == pytest.approx(q[k][i], abs=1e-12), (c["folder"], k)
    retention = read_csv(cohort / "evaluation-retention.csv")
    assert len(retention) == 21 * len(MAPS)
    for c in retention:
        r = ref["rows"][(c["folder"], c["region"])]["retention"]
        i = round(float(c["referred_fraction"]) * 20)
        assert float(c["referred_fraction"]) == pytest.approx(r["referred_fraction"][i])
        assert float(c["dice"]) == pytest.approx(r["dice"][i], abs=1e-12), c


def test_pooled_uncertainty_measures_equal_the_reference(uncertainty_cohort):
    _, _, _, ev, ref = uncertainty_cohort
    assert set(ref["regions"]) == set(ev["regions"]) == {"WT", "TC", "ET"}
    for name, theirs in ref["regions"].items():
        mine = ev["regions"][name]
        q, tq = mine["qubrats"], theirs["qubrats"]
        assert q["cases"] == sum(1 for f, r in MAPS if r == name)
        assert q["thresholds"] == [100 - 2.5 * k for k in range(41)]
        for k in ("score", "auc_dice", "auc_ftp", "auc_ftn"):
            assert q[k] == pytest.approx(tq[k], abs=1e-12), (name, k)
        for k in ("dice", "ftp_ratio", "ftn_ratio"):
            assert q[k] == pytest.approx(tq[k], abs=1e-12), (name, k)
        r, tr = mine["retention"], theirs["retention"]
        assert r["referred_fraction"] == pytest.approx([i / 20 for i in range(21)], abs=1e-15)
        assert r["auc"] == pytest.approx(tr["auc"], abs=1e-12)
        assert r["dice"] == pytest.approx(tr["dice"], abs=1e-12)
        c, tc = mine["voxel_calibration"], theirs["voxel_calibration"]
        assert (c["voxels"], [b["voxels"] for b in c["bins"]]) == (tc["voxels"], tc["count"])
        assert c["ece"] == pytest.approx(tc["ece"], abs=1e-12)
        for b, m, f in zip(c["bins"], tc["mean_probability"], tc["fraction_in_gt"]):
            assert b["mean_probability"] == (None if m is None else pytest.approx(m, abs=1e-12))
            assert b["fraction_in_gt"] == (None if f is None else pytest.approx(f, abs=1e-12))
    assert "QU-BraTS" in ev["uncertainty_rules"]["qubrats"]


def test_edge_cases_of_the_qubrats_score(uncertainty_cohort):
    """All certain: nothing is filtered, so the Dice curve is the case's Dice, no TP or TN is
    filtered and the score is (Dice + 2) / 3. Nothing predicted: no true positive, so the FTP
    ratio is 0 at every threshold (the scorer's eps). An empty GT region: likewise."""
    cohort, _, _, ev, _ = uncertainty_cohort
    rows = region_rows(ev)
    curves = read_csv(cohort / "evaluation-qubrats.csv")

    def curve(folder, region, key):
        return [float(c[key]) for c in curves if (c["folder"], c["region"]) == (folder, region)]

    certain = rows[("a-four-small", "TC")]
    assert curve("a-four-small", "TC", "dice") == pytest.approx([certain["dice"]] * 41,
                                                                abs=1e-15)
    assert curve("a-four-small", "TC", "ftp_ratio") == [0.0] * 41
    assert curve("a-four-small", "TC", "ftn_ratio") == [0.0] * 41
    assert certain["qubrats_score"] == pytest.approx((certain["dice"] + 2) / 3, abs=1e-12)
    for folder, region in (("c-four-empty", "WT"), ("b-four-phantom", "ET")):
        assert curve(folder, region, "ftp_ratio") == [0.0] * 41, (folder, region)
    # nothing predicted and GT present: Dice 0 until every GT voxel is filtered
    assert curve("c-four-empty", "WT", "dice")[0] == 0.0
    # every measure is a number in [0, 1]
    for r in rows.values():
        for key in ("qubrats_score", "qubrats_auc_dice", "qubrats_auc_ftp", "qubrats_auc_ftn",
                    "retention_auc", "ece"):
            assert r[key] is None or 0.0 <= r[key] <= 1.0, (r["folder"], r["region"], key)


def test_absent_uncertainty_maps_are_said_and_skipped(uncertainty_cohort):
    _, _, proc, ev, _ = uncertainty_cohort
    row = region_rows(ev)[("e-no-maps", "WT")]
    assert row["qubrats_score"] is None and row["retention_auc"] is None
    assert row["ece"] is not None
    assert row["uncertainty_note"] == "no uncertainty-WT.nii.gz: QU-BraTS and retention skipped"
    assert "no uncertainty-WT.nii.gz" in proc.stderr and "e-no-maps" in proc.stderr
    assert all(r["uncertainty_note"] is None for k, r in region_rows(ev).items() if k in MAPS)


def test_without_the_inputs_there_is_no_brain_mask_and_it_is_said(uncertainty_cohort, tmp_path):
    cohort, gt_dir, _, _, _ = uncertainty_cohort
    lone = tmp_path / "cohort"
    shutil.copytree(cohort / "d-one-region", lone / "d-one-region")
    report = json.loads((lone / "d-one-region" / "report.json").read_text())
    for entry in report["case"]["inputs"]:
        entry["path"] = str(tmp_path / "moved" / Path(entry["path"]).name)
    (lone / "d-one-region" / "report.json").write_text(json.dumps(report))
    proc = stochseg("evaluate", lone, "--gt", gt_dir, "--gt-pattern", "{case}-seg.nii.gz",
                    "--bootstrap", "10")
    assert proc.returncode == 0, proc.stderr
    (row,) = load_yaml((lone / "evaluation.yaml").read_text())["regions"]["WT"]["cases"]
    assert (row["qubrats_score"], row["retention_auc"], row["ece"]) == (None, None, None)
    assert row["uncertainty_note"].startswith("no brain mask from case.inputs (")
    assert "moved" in row["uncertainty_note"]
    assert row["dice"] == region_rows(load_yaml((cohort / "evaluation.yaml").read_text()))[
        ("d-one-region", "WT")]["dice"]


@pytest.mark.parametrize("value", [101, 2.5])
def test_a_malformed_uncertainty_map_is_refused(uncertainty_cohort, tmp_path, value):
    cohort, gt_dir, _, _, _ = uncertainty_cohort
    bad = tmp_path / "cohort"
    shutil.copytree(cohort / "d-one-region", bad / "d-one-region")
    path = bad / "d-one-region" / "uncertainty-WT.nii.gz"
    img = nib.load(str(path))
    u = np.asarray(img.dataobj).astype(np.float32)
    u[0, 0, 0] = value
    nib.save(nib.Nifti1Image(u, img.affine), str(path))
    proc = stochseg("evaluate", bad, "--gt", gt_dir, "--gt-pattern", "{case}-seg.nii.gz",
                    "--out", tmp_path / "o")
    assert proc.returncode == 3, proc.stderr
    line = error_line(proc)
    assert f"{path}: an uncertainty map holds whole numbers from 0 to 100, not {value}" in line
    assert not (tmp_path / "o" / "evaluation.yaml").exists()


def test_reliability_and_retention_plots_show_the_pooled_numbers(uncertainty_cohort):
    """evaluation-reliability.png and evaluation-retention.png: each region's points (regions
    in name order: ET blue, TC orange, WT green) where the plot maps them."""
    from test_compare import read_png

    cohort, _, _, ev, _ = uncertainty_cohort
    palette = {"ET": (31, 119, 180), "TC": (255, 127, 14), "WT": (44, 160, 44)}

    def pixel(p):  # the plot's box: 360 px from (44, 44), y up
        return round(44 + 359 - p[1] * 359), round(44 + p[0] * 359)

    reliability = read_png(cohort / "evaluation-reliability.png")
    retention = read_png(cohort / "evaluation-retention.png")
    assert reliability.shape == retention.shape == (440, 420, 3)
    own = {"reliability": 0, "retention": 0}
    for name, colour in palette.items():
        r = ev["regions"][name]
        points = [(b["mean_probability"], b["fraction_in_gt"])
                  for b in r["voxel_calibration"]["bins"] if b["voxels"]]
        for p in points:
            got = tuple(reliability[pixel(p)])
            assert got in palette.values(), (name, p, got)
            own["reliability"] += got == colour
        for p in zip(r["retention"]["referred_fraction"], r["retention"]["dice"]):
            got = tuple(retention[pixel(p)])
            assert got in palette.values(), (name, p, got)
            own["retention"] += got == colour
    assert own["reliability"] > 10 and own["retention"] > 10, own
