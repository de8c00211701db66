"""Tumor sub-regions (docs/configuration.md#regions): declared outputs, region log-odds, the
per-region maps, blobs and report, the BraTS label map, the SEG of several regions, and the
declarations that are refused.

The models are pointwise (a 1x1x1 convolution with known weights, made here with the onnx
package), so every stitched class logit is the model applied to the normalized input, and each
region's logit is computable in numpy: the log-odds of the region's classes against the others
(float64 log-sum-exp), the sigmoid channel itself, or the mean over the models that provide the
region. Runs are deterministic (one noise-free pass per model) so the comparison is exact up to
float32 rounding; blobs are checked against scipy's components of the written maps.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save
from scipy.special import logsumexp

import highdicom as hd
import pydicom

from checks import check_partition
from conftest import (
    CASE_DIR, ROOT, bounding_box, brain_mask, case_args, error_line, load_channels, load_nifti,
    model_path, run_ok, stochseg, write_config, zscore,
)
from test_seg import dciodvfy

BRATS = [{"name": "background", "label": 0}, {"name": "NETC", "label": 1},
         {"name": "SNFH", "label": 2}, {"name": "ET", "label": 3}]
REGIONS = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
# class logits l = W x + b of the normalized channels (t1n, t1c, t2w, t2f): chosen so that on
# case-small every region has voxels on both sides of 0 log-odds
W_A = np.array([[0.0, 0.0, 0.0, 0.0], [0.5, 0.8, 0.1, -0.3],
                [0.1, 0.2, 0.6, 1.0], [-0.2, 1.2, 0.2, 0.1]], dtype=np.float32)
B_A = np.array([1.5, -0.5, -0.2, -1.0], dtype=np.float32)
W_B = np.array([[0.1, 0.0, -0.2, 0.0], [0.3, 0.9, 0.0, -0.1],
                [0.0, 0.1, 0.8, 0.9], [0.0, 1.0, 0.3, 0.0]], dtype=np.float32)
B_B = np.array([1.2, -0.8, 0.1, -0.6], dtype=np.float32)
TOL = 2e-5


def pointwise(path, weights, bias, metadata: dict | None = None, output: str = "y"):
    """A 1x1x1 Conv with `weights` [k, 4] and `bias` [k]: dynamic batch and spatial size."""
    k = weights.shape[0]
    w = numpy_helper.from_array(weights.reshape(k, 4, 1, 1, 1).astype(np.float32), "w")
    b = numpy_helper.from_array(bias.astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], [output])], "pointwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "D", "H", "W"])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", k, "D", "H", "W"])],
        [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"patch_size": "16,32,32", **(metadata or {})}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    save(model, str(path))
    return path


def class_logits(weights, bias) -> np.ndarray:
    """[k, i, j, k] class logits of the pointwise model on case-small, computed as ONNX does
    (float32 normalized input, float32 products)."""
    x = zscore(load_channels()).astype(np.float32)
    return np.einsum("kc,cijl->kijl", weights, x) + bias[:, None, None, None]


def log_odds(logits: np.ndarray, classes: list, region: list) -> np.ndarray:
    inside = np.array([c["label"] in region for c in classes])
    l64 = logits.astype(np.float64)
    return logsumexp(l64[inside], axis=0) - logsumexp(l64[~inside], axis=0)


def softmax_decl() -> dict:
    return {"softmax": BRATS}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("regions")


@pytest.fixture(scope="module")
def softmax_model(work):
    return pointwise(work / "softmax-a.onnx", W_A, B_A, {"outputs": json.dumps(softmax_decl())})


@pytest.fixture(scope="module")
def softmax_run(work, softmax_model):
    cfg = write_config(work / "softmax.yaml", [softmax_model], {
        "ensemble": {"mode": "deterministic"},
        "blobs": {"decisions": {"accept": 3.0, "reject": 1.0}},
        "dicom_output": {"per_blob_segments": True, "decision_segments": True,
                         "probability_seg": True, "write_source_dicom": True}})
    return run_ok(work / "softmax-out", "--pipeline", cfg, *case_args())


def inside_crop() -> tuple:
    return bounding_box(brain_mask(load_channels()))


def test_softmax_region_maps_are_the_log_odds_of_their_classes(softmax_run):
    """Each region's mean logit is log(sum_{c in R} e^l_c) - log(sum_{c not in R} e^l_c) of
    the stitched class logits, inside the crop; outside it the outside logit."""
    logits = class_logits(W_A, B_A)
    crop = inside_crop()
    for name, labels in REGIONS.items():
        suffix = "" if name == "WT" else f"-{name}"
        got = softmax_run.map(f"mean_logits{suffix}")
        want = log_odds(logits, BRATS, labels)
        err = np.abs(got[crop] - want[crop]) / np.maximum(1.0, np.abs(want[crop]))
        assert err.max() <= TOL, f"{name}: worst relative error {err.max()}"
        outside = np.ones(got.shape, bool)
        outside[crop] = False
        assert np.all(got[outside] == -10.0)
        assert ((want[crop] > 0).any() and (want[crop] < 0).any()), f"{name} is one-sided"


def test_argmax_label_map_and_the_report(softmax_run):
    """Softmax-only ensemble: labels-brats is the per-voxel argmax of the averaged class
    probabilities (here one pass: the argmax of the class logits), 0 outside the crop."""
    logits = class_logits(W_A, B_A)
    labels = np.asarray(load_nifti(softmax_run.path("labels-brats")).dataobj)
    assert labels.dtype == np.uint8
    want = np.zeros(labels.shape, np.uint8)
    crop = inside_crop()
    want[crop] = np.argmax(logits, axis=0)[crop]
    assert np.array_equal(labels, want)
    r = softmax_run.report
    assert r["schema_version"] == 2
    assert r["label_map"] == {"file": "labels-brats.nii.gz", "rule": "argmax", "labels": [
        {"label": 1, "name": "NETC"}, {"label": 2, "name": "SNFH"}, {"label": 3, "name": "ET"}]}
    assert r["region"] == {"name": "WT", "labels": [1, 2, 3], "models": ["softmax-a"]}
    assert sorted(r["regions"]) == ["ET", "TC", "WT"]
    assert r["regions"]["WT"]["blobs"] == r["blobs"]
    assert r["regions"]["WT"]["statistics"] == r["statistics"]
    assert r["models"][0]["outputs"] == softmax_decl()
    assert r["regions"]["TC"]["outputs"] == [
        f"{m}-TC.nii.gz" for m in ("mean_logits", "std_logits", "probability", "labels",
                                   "entropy", "expected_entropy", "mutual_information",
                                   "logit_variance_between", "logit_variance_within",
                                   "uncertainty")]
    for name in ("TC", "ET"):
        assert f"labels-{name}.nii.gz" in r["outputs"]


def test_each_region_has_its_own_blobs(softmax_run):
    """A region's labels map is scipy's partition of its aggregated logit > threshold, and its
    report blobs count and size the ids."""
    r = softmax_run.report
    for name, entry in r["regions"].items():
        suffix = "" if name == "WT" else f"-{name}"
        labels = np.asarray(load_nifti(softmax_run.path(f"labels{suffix}")).dataobj)
        logit = softmax_run.map(f"mean_logits{suffix}")
        n = check_partition(labels, logit, 0.0, 26, 1)
        assert n == len(entry["blobs"]) and n > 0, name
        sizes = np.bincount(labels.ravel().astype(np.int64), minlength=n + 1)
        assert [b["voxels"] for b in entry["blobs"]] == sizes[1:].tolist()
        for b in entry["blobs"]:
            mean = float(logit[labels == b["id"]].mean())
            assert abs(b["mean_logit"] - mean) <= 1e-4 * max(1.0, abs(mean))
            assert set(b["model_mean_logits"]) == {"softmax-a"}


def test_seg_of_several_regions(softmax_run):
    """seg.dcm: NETC, SNFH, ET from the label map (coded as PS3.16 CID 7168 codes them), then
    three decision segments per region, then every region's blobs; each segment's mask on the
    referenced series equals its map; the FRACTIONAL SEG has one segment per region. dciodvfy
    finds no error."""
    out = softmax_run.out
    r = softmax_run.report
    for name in ("seg.dcm", "prob-seg.dcm"):
        dciodvfy(out / name)
    seg = hd.seg.segread(out / "seg.dcm")
    items = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    codes = {items[n].SegmentLabel: items[n].SegmentedPropertyTypeCodeSequence[0].CodeValue
             for n in (1, 2, 3)}
    assert codes == {"NETC": "6574001", "SNFH": "79654002", "ET": "C113842"}
    assert [items[n].SegmentLabel for n in range(4, 13)] == [
        f"{reg}: {d}" for reg in ("WT", "TC", "ET") for d in ("accept", "review", "reject")]
    ref = sorted((out / "source-dicom" / "t2f").glob("*.dcm"))
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in ref]

    def mask(number):
        arr = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=[number],
            ignore_spatial_locations=True, assert_missing_frames_are_empty=True)
        return arr[..., 0].transpose(2, 1, 0).astype(bool)

    brats = np.asarray(load_nifti(softmax_run.path("labels-brats")).dataobj)
    for n, label in ((1, 1), (2, 2), (3, 3)):
        assert np.array_equal(mask(n), brats == label), items[n].SegmentLabel
    for name, entry in r["regions"].items():
        suffix = "" if name == "WT" else f"-{name}"
        labels = np.asarray(load_nifti(softmax_run.path(f"labels{suffix}")).dataobj)
        for b in entry["blobs"][:3]:
            assert np.array_equal(mask(b["seg_segment_number"]), labels == b["id"]), (name, b)
        accepted = [b["id"] for b in entry["blobs"] if b["decision"] == "accept"]
        number = next(n for n, s in items.items() if s.SegmentLabel == f"{name}: accept")
        assert np.array_equal(mask(number), np.isin(labels, accepted))
    fractional = pydicom.dcmread(out / "prob-seg.dcm")
    assert [s.SegmentLabel for s in fractional.SegmentSequence] == [
        "WT probability", "TC probability", "ET probability"]


def test_a_mixed_ensemble_averages_each_region_over_its_models(work, softmax_model):
    """A one-logit WT model (undeclared, one channel) and two four-class models: WT is the mean
    over all three models' WT logits, TC and ET over the two four-class models; the label map
    comes from the nested rule."""
    b_model = pointwise(work / "softmax-b.onnx", W_B, B_B)
    wt_only = {"path": str(model_path("identity-plus-one.onnx")), "patch_size": [16, 32, 32]}
    cfg = write_config(work / "mixed.yaml", [
        wt_only, str(softmax_model), {"path": str(b_model), "outputs": softmax_decl()}],
        {"ensemble": {"mode": "deterministic"}})
    run = run_ok(work / "mixed-out", "--pipeline", cfg, *case_args())
    r = run.report
    models = ["identity-plus-one", "softmax-a", "softmax-b"]
    assert r["regions"]["WT"]["models"] == models
    assert r["regions"]["TC"]["models"] == models[1:]
    x = zscore(load_channels()).astype(np.float32)
    la, lb = class_logits(W_A, B_A), class_logits(W_B, B_B)
    crop = inside_crop()
    want = {
        "WT": (x[0] + 1 + log_odds(la, BRATS, REGIONS["WT"]) + log_odds(lb, BRATS, REGIONS["WT"])) / 3,
        "TC": (log_odds(la, BRATS, REGIONS["TC"]) + log_odds(lb, BRATS, REGIONS["TC"])) / 2,
        "ET": (log_odds(la, BRATS, REGIONS["ET"]) + log_odds(lb, BRATS, REGIONS["ET"])) / 2,
    }
    got = {}
    for name in REGIONS:
        got[name] = run.map("mean_logits" if name == "WT" else f"mean_logits-{name}")
        err = np.abs(got[name][crop] - want[name][crop]) / np.maximum(1, np.abs(want[name][crop]))
        assert err.max() <= TOL, f"{name}: {err.max()}"
    # nested: ET where ET > 0, else NETC where TC > 0, else SNFH where WT > 0
    nested = np.where(got["ET"] > 0, 3, np.where(got["TC"] > 0, 1, np.where(got["WT"] > 0, 2, 0)))
    labels = np.asarray(load_nifti(run.path("labels-brats")).dataobj)
    assert np.array_equal(labels, nested)
    assert r["label_map"]["rule"] == "nested"
    assert set(r["regions"]["TC"]["blobs"][0]["model_mean_logits"]) == set(models[1:])


def test_sigmoid_regions_are_the_channels(work):
    """A region model (one sigmoid logit per region, nnU-Net's region-based export) provides
    each declared region as its channel, whatever the channel order."""
    decl = {"sigmoid": [{"name": "ET", "labels": [3]}, {"name": "WT", "labels": [1, 2, 3]},
                        {"name": "TC", "labels": [1, 3]}]}
    m = pointwise(work / "sigmoid.onnx", W_A[1:], B_A[1:], {"outputs": json.dumps(decl)})
    cfg = write_config(work / "sigmoid.yaml", [m], {"ensemble": {"mode": "deterministic"}})
    run = run_ok(work / "sigmoid-out", "--pipeline", cfg, *case_args())
    logits = class_logits(W_A[1:], B_A[1:])
    crop = inside_crop()
    for channel, name in enumerate(("ET", "WT", "TC")):
        got = run.map("mean_logits" if name == "WT" else f"mean_logits-{name}")
        assert np.abs(got[crop] - logits[channel][crop]).max() <= TOL, name
    assert run.report["region"]["name"] == "WT"
    assert run.report["label_map"]["rule"] == "nested"


@pytest.mark.parametrize("case", [
    "undeclared", "channel-count", "unknown-region", "covers-no-class", "same-label",
    "labels-differ"])
def test_bad_declarations_are_refused_before_anything_runs(work, case):
    weights, bias, meta, extra = W_A, B_A, {}, {}
    if case == "channel-count":
        meta = {"outputs": json.dumps({"softmax": BRATS[:3]})}
    elif case == "unknown-region":
        meta = {"outputs": json.dumps({"sigmoid": [{"name": "WT"}, {"name": "XT"}, {"name": "TC"},
                                                    {"name": "ET"}]})}
        extra = {"regions": [{"name": n, "labels": v} for n, v in REGIONS.items()]}
    elif case == "covers-no-class":
        meta = {"outputs": json.dumps(softmax_decl())}
        extra = {"regions": [{"name": "WT", "labels": [1, 2, 3]}, {"name": "RX", "labels": [7]}]}
    elif case == "same-label":
        twice = [dict(c) for c in BRATS]
        twice[3]["label"] = 2
        meta = {"outputs": json.dumps({"softmax": twice})}
    elif case == "labels-differ":
        weights, bias = W_A[:1], B_A[:1]
        meta = {"outputs": json.dumps({"logit": {"name": "WT", "labels": [1]}})}
        extra = {"regions": [{"name": "WT", "labels": [1, 2, 3]}]}
    model = pointwise(work / f"bad-{case}.onnx", weights, bias, meta)
    cfg = write_config(work / f"bad-{case}.yaml", [model], extra)
    out = work / f"bad-{case}-out"
    proc = stochseg("run", "--pipeline", cfg, *case_args(), "--out", out, "--passes", "1")
    line = error_line(proc)
    assert proc.returncode == 4, line
    assert str(model) in line or case == "covers-no-class", line
    needle = {
        "undeclared": "output has 4 channels and no declaration",
        "channel-count": "declaration has 3 channels, the model's output has 4",
        "unknown-region": "region 'XT'",
        "covers-no-class": "region 'RX': no model provides it",
        "same-label": "have the same label 2",
        "labels-differ": "region 'WT' covers labels 1 in the model's declaration and 1|2|3",
    }[case]
    assert needle in line, line
    assert "stage done stage=\"ensemble\"" not in proc.stderr
    assert not out.exists() and not list(work.glob(f".bad-{case}-out*"))


def test_output_channel_reads_one_channel_of_an_undeclared_model(work):
    """`output_channel` is a declaration too: one channel of a multi-channel model as the WT
    logit, a one-region run with today's outputs."""
    model = pointwise(work / "pick.onnx", W_A, B_A)
    cfg = write_config(work / "pick.yaml", [{"path": str(model), "output_channel": 2}],
                       {"ensemble": {"mode": "deterministic"}})
    run = run_ok(work / "pick-out", "--pipeline", cfg, *case_args())
    crop = inside_crop()
    want = class_logits(W_A, B_A)[2]
    assert np.abs(run.map("mean_logits")[crop] - want[crop]).max() <= TOL
    assert "regions" not in run.report and not run.path("labels-brats").exists()
    assert run.report["region"] == {"name": "WT", "labels": None, "models": ["pick"]}


# --------------------------------------------------------------------------------------------
# trained models against the independent reference (tests/python/reference.py)
# --------------------------------------------------------------------------------------------
REF_ATOL = 1e-4  # as the golden whole-tumour outputs: float32 stitching in two orders
REF_RTOL = 1e-5


def reference_regions(model: str, classes: list | None, regions: dict) -> dict:
    """Region logits of one deterministic pass over the whole grid (no crop) by the reference:
    the same windows, every output channel stitched, then the region log-odds (softmax) or the
    channel (sigmoid); (i, j, k) order."""
    from reference import region_log_odds, session, sliding_window

    x = zscore(load_channels()).astype(np.float32).transpose(0, 3, 2, 1)  # [c, z, y, x]
    stitched = sliding_window(session(model), x, all_channels=True)
    out = {}
    for r, (name, labels) in enumerate(regions.items()):
        if classes is None:
            zyx = stitched[r]
        else:
            zyx = region_log_odds(stitched, [c["label"] for c in classes], labels)
        out[name] = np.asarray(zyx, np.float32).transpose(2, 1, 0)
    return out


@pytest.mark.parametrize("model, classes", [
    ("unet4-p32.onnx", BRATS), ("unetr-p64.onnx", None)])
def test_trained_models_match_the_reference(work, model, classes):
    """The shipped four-class and region demo models, one noise-free pass over the whole grid:
    every region's map equals the reference's within 1e-4 + 1e-5 |value| (the golden
    tolerance), and the blobs of each region are the reference map's components."""
    path = ROOT / "onnx" / model
    cfg = write_config(work / f"ref-{model}.yaml", [path], {
        "ensemble": {"mode": "deterministic"}, "preprocess": {"crop_to_nonzero": False}})
    run = run_ok(work / f"ref-{model}-out", "--pipeline", cfg, *case_args())
    want = reference_regions(str(path), classes, REGIONS)
    for name in REGIONS:
        suffix = "" if name == "WT" else f"-{name}"
        got = run.map(f"mean_logits{suffix}")
        diff = np.abs(got - want[name])
        allowed = REF_ATOL + REF_RTOL * np.abs(want[name])
        assert (diff <= allowed).all(), f"{model} {name}: worst {diff.max():.3g}"
        labels = np.asarray(load_nifti(run.path(f"labels{suffix}")).dataobj)
        # components of the reference map, except voxels within the tolerance of 0
        sure = np.abs(want[name]) > REF_ATOL * 10
        assert np.array_equal((labels > 0)[sure], (want[name] > 0)[sure]), name
        assert check_partition(labels, got, 0.0, 26, 1) == len(
            run.report["regions"][name]["blobs"])


def test_a_foreign_four_class_model_declared_in_the_config(work):
    """foreign4.onnx (other tensor names, batch fixed to 2, no metadata) with its label set
    declared only in tests/fixtures/models/foreign4.yaml: per-region maps, blobs, the BraTS
    label map and a valid multi-segment SEG."""
    cfg = CASE_DIR.parent / "models" / "foreign4.yaml"
    run = run_ok(work / "foreign-out", "--pipeline", cfg, *case_args(),
                 "--write-source-dicom")
    r = run.report
    assert r["models"][0]["outputs"] == softmax_decl()
    assert r["models"][0]["batch_size"] == 2
    assert sorted(r["regions"]) == ["ET", "TC", "WT"]
    assert all(r["regions"][n]["blobs"] for n in REGIONS), "every region finds the tumours"
    brats = np.asarray(load_nifti(run.path("labels-brats")).dataobj)
    assert set(np.unique(brats)) == {0, 1, 2, 3}
    dciodvfy(run.out / "seg.dcm")
    seg = hd.seg.segread(run.out / "seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence][:3] == ["NETC", "SNFH", "ET"]


def test_the_shipped_undeclared_model_is_refused(work):
    model = CASE_DIR.parent / "models" / "undeclared4.onnx"
    out = work / "undeclared-out"
    proc = stochseg("run", "--model", model, *case_args(), "--out", out, "--passes", "1")
    assert proc.returncode == 4
    line = error_line(proc)
    assert str(model) in line and "4 channels" in line and "`outputs`" in line, line
    assert not out.exists()
