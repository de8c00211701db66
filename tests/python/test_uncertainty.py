"""The uncertainty decomposition (docs/method.md#uncertainty): entropy, expected entropy,
mutual information and the between/within-model split of the logit variance, per voxel, per
blob and over the brain, and the QU-BraTS map uncertainty-<region>.nii.gz.

Every map is recomputed in numpy (float64) from the pass maps the same run writes
(`outputs.pass_maps`: each pass's region logits on the input grid), and checked against what
the decomposition must give analytically: a pointwise linear model's logit variance under input
noise N(0, sigma^2) per channel is sigma^2 |w|^2, so its within-model part must be that (times
(K-1)/K, the population variance of K passes) on average; identical models without noise
disagree nowhere (between-model variance and mutual information 0).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save

from conftest import (
    ROOT, bounding_box, brain_mask, case_args, load_channels, load_nifti, model_path, run_ok,
    write_config,
)

W = np.array([0.6, -0.4, 0.3, 0.5], dtype=np.float32)
SIGMA = 0.3


def entropy_bits(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.where((p <= 0) | (p >= 1), 0.0, h)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def linear_model(path, weights=W, bias=0.25):
    """One output channel: w . x + bias, pointwise (a 1x1x1 Conv), dynamic shapes."""
    w = numpy_helper.from_array(weights.reshape(1, 4, 1, 1, 1).astype(np.float32), "w")
    b = numpy_helper.from_array(np.array([bias], np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "D", "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "D", "H", "W"])],
        [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "patch_size", "16,32,32"
    save(model, str(path))
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("uncertainty")


@pytest.fixture(scope="module")
def unet_run(work):
    """Two demo U-Nets (one of them four-class, so three regions), three noisy passes each,
    the pass maps and the deterministic comparison."""
    models = [model_path("unet-p32"), ROOT / "onnx" / "unet4-p32.onnx"]
    cfg = write_config(work / "unets.yaml", models, {
        "ensemble": {"passes": 3, "sigma": 0.4, "seed": 11, "compare_deterministic": True},
        "outputs": {"pass_maps": True, "figures": True}})
    return run_ok(work / "unets-out", "--pipeline", cfg, *case_args())


def pass_stack(run, region: str):
    """[models][passes] of float64 (i, j, k) pass logits of `region`, from passes/."""
    per_model: dict = {}
    for f in sorted((run.out / "passes" / region).glob("*-pass*.nii.gz")):
        model = f.name.rsplit("-pass", 1)[0]
        per_model.setdefault(model, []).append(load_nifti(f).get_fdata(dtype=np.float64))
    return [np.stack(v) for v in per_model.values()]


def region_map(run, kind: str, region: str) -> np.ndarray:
    primary = run.report["region"]["name"]
    name = kind if region == primary else f"{kind}-{region}"
    return run.map(name)


@pytest.mark.parametrize("region", ["WT", "TC", "ET"])
def test_maps_are_the_decomposition_of_the_pass_maps(unet_run, region):
    models = pass_stack(unet_run, region)
    expected_models = 2 if region == "WT" else 1
    assert len(models) == expected_models and all(m.shape[0] == 3 for m in models)
    logits = np.concatenate(models)
    n = logits.shape[0]
    assert np.abs(region_map(unet_run, "mean_logits", region) - logits.mean(0)).max() < 1e-4
    p = sigmoid(logits)
    entropy = entropy_bits(p.mean(0))
    expected = entropy_bits(p).mean(0)
    within = sum(((m - m.mean(0)) ** 2).sum(0) for m in models) / n
    total = logits.var(0)
    between = total - within
    checks = {
        "entropy": (entropy, 2e-5),
        "expected_entropy": (expected, 2e-5),
        "mutual_information": (np.maximum(entropy - expected, 0), 3e-5),
        "logit_variance_within": (within, 1e-4),
        "logit_variance_between": (between, 1e-4),
    }
    for kind, (want, tol) in checks.items():
        got = region_map(unet_run, kind, region).astype(np.float64)
        err = np.abs(got - want) / np.maximum(1.0, np.abs(want))
        assert err.max() <= tol, f"{region} {kind}: worst {err.max():.3g}"
    percent = np.asarray(load_nifti(unet_run.out / f"uncertainty-{region}.nii.gz").dataobj)
    assert percent.dtype == np.uint8
    want = np.rint(100 * entropy)
    near_half = np.abs(100 * entropy - np.floor(100 * entropy) - 0.5) < 1e-3
    assert np.array_equal(percent[~near_half], want[~near_half].astype(np.uint8))
    assert percent.max() <= 100 and (percent > 0).any()


def test_blob_and_brain_summaries(unet_run):
    """Each blob's uncertainty fields are the means of the maps over its voxels; the report's
    `uncertainty` summarizes the maps over the brain (count and mean)."""
    r = unet_run.report
    labels = unet_run.map("labels")
    fields = {"mean_entropy": "entropy", "mean_mutual_information": "mutual_information",
              "mean_logit_variance_between": "logit_variance_between",
              "mean_logit_variance_within": "logit_variance_within"}
    assert r["blobs"]
    for b in r["blobs"]:
        inside = labels == b["id"]
        for field, kind in fields.items():
            want = float(unet_run.map(kind)[inside].astype(np.float64).mean())
            assert abs(b[field] - want) <= 1e-5 * max(1.0, abs(want)), (b["id"], field)
    brain = brain_mask(load_channels())
    for kind in ("entropy", "expected_entropy", "mutual_information",
                 "logit_variance_between", "logit_variance_within"):
        values = unet_run.map(kind)[brain].astype(np.float64)
        s = r["uncertainty"][kind]
        assert s["count"] == values.size
        assert abs(s["mean"] - values.mean()) <= 1e-5 * max(1.0, abs(values.mean())), kind
        assert sum(s["histogram"]["counts"]) == values.size
    assert r["regions"]["TC"]["uncertainty"]["entropy"]["count"] == brain.sum()


def test_the_deterministic_ensemble_has_no_within_model_spread(unet_run):
    r = unet_run.report
    det = r["comparison"]["deterministic"]["uncertainty"]
    assert det["logit_variance_within"]["mean"] == 0.0
    assert det["logit_variance_between"]["mean"] > 0
    for b in r["comparison"]["blobs"]:
        assert b["stochastic_mean_entropy"] == next(
            x["mean_entropy"] for x in r["blobs"] if x["id"] == b["id"])
        assert 0 <= b["deterministic_mean_mutual_information"] <= b["deterministic_mean_entropy"]
    assert (unet_run.out / "figures" / "uncertainty-histogram.png").stat().st_size > 1000


def test_noise_variance_of_a_linear_model_is_sigma_squared_times_the_weights(work):
    """Two identical pointwise linear models, K = 8 passes each, noise on the whole volume:
    the within-model logit variance averages (K - 1) / K sigma^2 |w|^2 (to 2%, over ~10^5
    voxels), the between-model part averages the variance of two means of K passes,
    sigma^2 |w|^2 / (2 K)."""
    m = linear_model(work / "linear.onnx")
    k = 8
    cfg = write_config(work / "linear.yaml", [m, m], {
        "ensemble": {"passes": k, "sigma": SIGMA, "seed": 3, "noise_region": "volume"}})
    run = run_ok(work / "linear-out", "--pipeline", cfg, *case_args())
    crop = bounding_box(brain_mask(load_channels()))
    var = SIGMA ** 2 * float((W.astype(np.float64) ** 2).sum())
    within = run.map("logit_variance_within")[crop].astype(np.float64).mean()
    between = run.map("logit_variance_between")[crop].astype(np.float64).mean()
    assert abs(within / ((k - 1) / k * var) - 1) < 0.02, (within, var)
    assert abs(between / (var / (2 * k)) - 1) < 0.05, (between, var / (2 * k))


def test_identical_models_without_noise_agree_everywhere(work):
    m = linear_model(work / "same.onnx")
    cfg = write_config(work / "same.yaml", [m, m, m], {"ensemble": {"mode": "deterministic"}})
    run = run_ok(work / "same-out", "--pipeline", cfg, *case_args())
    for kind in ("logit_variance_between", "logit_variance_within", "mutual_information"):
        assert np.abs(run.map(kind)).max() <= 1e-6, kind
    p = sigmoid(run.map("mean_logits"))
    crop = bounding_box(brain_mask(load_channels()))
    assert np.abs(run.map("entropy")[crop] - entropy_bits(p)[crop]).max() < 2e-5
    assert np.abs(run.map("expected_entropy") - run.map("entropy")).max() < 2e-5
