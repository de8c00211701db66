"""Blobs: labels.nii.gz against scipy.ndimage.label on (mean_logits > threshold), and every
per-blob number in the report against numpy on the written maps."""

from __future__ import annotations

import numpy as np
import pytest

from checks import check_blob_report, check_partition, expected_components
from conftest import (CHANNELS, RunOutput, case_args, check_report_files, error_line,
                      lps_affine, model_path, run_ok, stochseg, write_config)


@pytest.mark.parametrize("name", ["stoch_all", "p64_s0", "det_nocrop_all", "det_crop_p64"])
def test_blobs_match_scipy_and_numpy(runs, name):
    r = runs.get(name)
    th = r.report["thresholds"]
    assert (th["connectivity"], th["min_voxels"], th["logit"]) == (26, 1, 0)  # the defaults
    meas = check_blob_report(r)
    assert len(meas) > 0, "no blobs: this run checks nothing"
    # the positive-voxel count equals the blob voxels when nothing is dropped
    assert r.report["statistics"]["positive_voxels"] == sum(m["voxels"] for m in meas)


P64 = ["--passes", "3", "--seed", "0", "--threads", "2", "--batch-size", "4"]


@pytest.fixture(scope="module")
def connectivity_threshold(runs):
    """A threshold at which 6-, 18- and 26-connectivity partition the p64 map differently
    (so the connectivity runs discriminate), chosen from the map's own brain quantiles; 0 when
    none of the candidates separates them (the partition checks still apply)."""
    m = runs.get("p64_s0").map("mean_logits")
    outside = float(runs.get("p64_s0").report["preprocess"]["outside_logit"])
    inside = m != np.float32(outside)
    cands = [0.0] + [round(float(np.quantile(m[inside], q)), 4)
                     for q in (0.5, 0.7, 0.3, 0.85, 0.15, 0.95, 0.98)]
    # stay above outside_logit (see test_threshold_below_outside_logit for what happens below)
    cands = [t for t in cands if t > outside + 0.5]
    for t in cands:
        n = [expected_components(m, t, c)[2] for c in (6, 18, 26)]
        if n[0] > n[1] > n[2]:
            return t
    for t in cands:
        n = [expected_components(m, t, c)[2] for c in (6, 26)]
        if n[0] > n[1]:
            return t
    print("\nno candidate threshold separates 6- from 26-connectivity on this map")
    return 0.0


@pytest.fixture(scope="module")
def connectivity_runs(connectivity_threshold, tmp_path_factory):
    d = tmp_path_factory.mktemp("connectivity")
    out = {}
    for conn, min_voxels in ((6, 1), (18, 4), (26, 2)):
        cfg = write_config(d / f"c{conn}.yaml", [model_path("unet-p64")],
                           {"blobs": {"connectivity": conn, "min_voxels": min_voxels,
                                      "threshold": connectivity_threshold}})
        out[conn] = run_ok(d / f"out{conn}", "--pipeline", cfg, *case_args(), *P64)
    return out


@pytest.mark.parametrize("connectivity,min_voxels", [(6, 1), (18, 4), (26, 2)])
def test_connectivity(connectivity_runs, connectivity_threshold, connectivity, min_voxels):
    r = connectivity_runs[connectivity]
    th = r.report["thresholds"]
    assert th["connectivity"] == connectivity and th["min_voxels"] == min_voxels
    assert th["logit"] == pytest.approx(connectivity_threshold, abs=1e-6)
    meas = check_blob_report(r)
    assert len(meas) > 0, "no blobs: this run checks nothing"


def test_connectivity_runs_share_one_map(connectivity_runs, runs):
    """Same seed and config: the maps are identical, only the partition differs; and a labels
    map made with one connectivity fails the check for another (the check discriminates)."""
    base = runs.get("p64_s0").map("mean_logits")
    for r in connectivity_runs.values():
        assert np.array_equal(r.map("mean_logits"), base)
    m = base
    t = connectivity_runs[6].report["thresholds"]["logit"]
    n6, n26 = (expected_components(m, t, c)[2] for c in (6, 26))
    print(f"\nthreshold {t}: {n6} components (6-conn), {n26} (26-conn)")
    if n6 != n26:
        with pytest.raises(AssertionError):
            check_partition(connectivity_runs[6].map("labels"), m, t, 26, 1)


def test_mean_probability_aggregation(tmp_path):
    cfg = write_config(tmp_path / "mp.yaml", [model_path("unet-p64")],
                       {"ensemble": {"aggregation": "mean_probability"}})
    r = run_ok(tmp_path / "out", "--pipeline", cfg, *case_args(), "--passes", "2",
               "--seed", "5")
    assert r.report["ensemble"]["aggregation"] == "mean_probability"
    meas = check_blob_report(r)
    assert len(meas) > 0, "no blobs: this run checks nothing"


def test_threshold_below_outside_logit(tmp_path):
    """Blobs are the components of (aggregated logit > threshold) on the written map.  When the
    threshold is below outside_logit (schema: threshold >= -100, outside_logit any number), the
    region outside the crop box is written as outside_logit > threshold, so it must be labelled
    too (or the config refused) -- the binary labels only the crop box."""
    cfg = write_config(tmp_path / "t.yaml",
                       [{"path": str(model_path("identity-plus-one.onnx")),
                         "patch_size": [16, 32, 32]}],
                       {"ensemble": {"mode": "deterministic"},
                        "blobs": {"threshold": -20}})
    p = stochseg("run", "--pipeline", cfg, *case_args(), "--out", tmp_path / "out")
    if p.returncode != 0:
        # refusing the combination is an acceptable answer: a config error naming the keys
        assert p.returncode == 2, p.stderr
        line = error_line(p)
        assert "threshold" in line and "outside_logit" in line, line
        return
    r = RunOutput(out=tmp_path / "out", proc=p)
    check_report_files(r.out)
    m = r.map("mean_logits")
    positive = int((m > np.float32(-20)).sum())
    labelled = int((r.map("labels") > 0).sum())
    assert labelled == positive, (
        f"{positive} voxels of mean_logits.nii.gz exceed the threshold, {labelled} are labelled "
        f"(the voxels outside the crop box, written as outside_logit = -10, are left out)")
    assert r.report["statistics"]["positive_voxels"] == positive, (
        f"statistics.positive_voxels {r.report['statistics']['positive_voxels']} but "
        f"{positive} voxels of mean_logits.nii.gz exceed the threshold")


def test_deterministic_pass_fields_match_single_model_runs(runs):
    """Deterministic 3-model run: one pass per model, so model_mean_logits[m] is the blob mean
    of that model's own logits (= the single-model run's map), pass_logit_std the sample std of
    the three, pass_agreement the fraction above the threshold."""
    r = runs.get("det_nocrop_all")
    check_blob_report(r)
    labels = r.map("labels")
    singles = {m: runs.get(f"det_nocrop_{m.split('-')[1]}").map("mean_logits")
               for m in ("unet-p32", "unet-p64", "unet-p256")}
    assert r.report["blobs"], "no blobs"
    flat = labels.ravel()
    n = int(labels.max())
    counts = np.bincount(flat, minlength=n + 1)
    for m, arr in singles.items():
        v = arr.ravel().astype(np.float64)
        sums = np.bincount(flat, weights=v, minlength=n + 1)
        # half-precision (or better) storage of passes: at most half an f16 ulp per voxel
        half_ulp = np.spacing(np.abs(arr.ravel()).astype(np.float16)).astype(np.float64) / 2
        tol = np.bincount(flat, weights=half_ulp, minlength=n + 1)
        for b in r.report["blobs"]:
            i = b["id"]
            expected = sums[i] / counts[i]
            assert abs(b["model_mean_logits"][m] - expected) <= tol[i] / counts[i] + 1e-7, \
                (i, m, b["model_mean_logits"][m], expected)
    thr = r.report["thresholds"]["logit"]
    for b in r.report["blobs"]:
        vals = np.array([b["model_mean_logits"][m] for m in singles])
        assert abs(b["pass_logit_std"] - vals.std(ddof=1)) <= 1e-9 + 1e-6 * vals.std(ddof=1)
        assert b["pass_agreement"] == pytest.approx((vals > thr).mean(), abs=1e-12)


# ------------------------------------------------------------------------------------------
# synthetic case with known blobs (identity model: logit = z-scored t1n + 1)
# ------------------------------------------------------------------------------------------
SHAPE = (40, 36, 20)
# RAS affine, anisotropic voxels (1.2 x 0.9 x 2.5 mm), so the binary has to flip i and j
AFFINE = np.array([[1.2, 0, 0, -20.0], [0, 0.9, 0, -14.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])


def _cube(lo, hi):
    return [(i, j, k) for i in range(lo[0], hi[0] + 1) for j in range(lo[1], hi[1] + 1)
            for k in range(lo[2], hi[2] + 1)]


GROUPS = {
    "A": (_cube((5, 5, 5), (7, 7, 7)), 1000),              # 27 voxels
    "B": ([(i, 15, 5) for i in range(5, 15)], 1000),      # 10-voxel line
    "C": ([(15, 16, 5)], 1000),                           # edge-touches B's end
    "D": (_cube((25, 5, 10), (26, 6, 11)), 1000),         # 8 voxels
    "E": ([(27, 7, 12)], 1000),                           # corner-touches D
    "F": ([(30, 30, 15)], 1000),                          # isolated single voxel
    "G": (_cube((10, 25, 15), (11, 26, 15)), 1000),       # 4 voxels
    "H": (_cube((20, 25, 15), (21, 26, 15)), 1500),       # 4 voxels, brighter: id before G
}
# expected blobs, in id order, per (connectivity, min_voxels)
EXPECTED = {
    (6, 2): [["A"], ["B"], ["D"], ["H"], ["G"]],
    (18, 2): [["A"], ["B", "C"], ["D"], ["H"], ["G"]],
    (26, 1): [["A"], ["B", "C"], ["D", "E"], ["H"], ["G"], ["F"]],
}


@pytest.fixture(scope="module")
def synthetic_case(tmp_path_factory):
    import nibabel as nib

    d = tmp_path_factory.mktemp("synthetic-case")
    t1n = np.zeros(SHAPE, np.int16)
    t1n[2:-2, 2:-2, 2:-2] = 100
    for voxels, value in GROUPS.values():
        for v in voxels:
            t1n[v] = value
    for c in CHANNELS:
        data = t1n if c == "t1n" else np.where(t1n > 0, 50, 0).astype(np.int16)
        img = nib.Nifti1Image(data, AFFINE)
        img.header.set_sform(AFFINE, 1)
        img.header.set_qform(AFFINE, 1)
        nib.save(img, str(d / f"SYN-0001-{c}.nii.gz"))
    v = t1n[t1n > 0].astype(np.float64)
    z = lambda x: (x - v.mean()) / v.std() + 1  # noqa: E731
    threshold = float((z(100) + z(1000)) / 2)
    return d, threshold


@pytest.mark.parametrize("connectivity,min_voxels", sorted(EXPECTED))
def test_synthetic_blobs(tmp_path, synthetic_case, connectivity, min_voxels):
    case, threshold = synthetic_case
    cfg = write_config(tmp_path / "syn.yaml",
                       [{"path": str(model_path("identity-plus-one.onnx")),
                         "patch_size": [8, 16, 16]}],
                       {"ensemble": {"mode": "deterministic"},
                        "blobs": {"threshold": threshold, "connectivity": connectivity,
                                  "min_voxels": min_voxels}})
    r = run_ok(tmp_path / "out", "--pipeline", cfg, "--case", case)
    labels = r.map("labels")
    expected = np.zeros(SHAPE, np.int64)
    for i, names in enumerate(EXPECTED[(connectivity, min_voxels)], start=1):
        for g in names:
            for v in GROUPS[g][0]:
                expected[v] = i
    assert np.array_equal(labels, expected), (
        f"labels differ at {np.argwhere(labels != expected)[:5].tolist()}")
    check_blob_report(r)
    blobs = r.report["blobs"]
    stored = r.img("labels").affine  # AFFINE as float32 in the header
    np.testing.assert_allclose(stored, AFFINE, atol=1e-6)
    lps = lps_affine(stored)
    for b, names in zip(blobs, EXPECTED[(connectivity, min_voxels)]):
        pts = np.array([v for g in names for v in GROUPS[g][0]], dtype=np.float64)
        assert b["voxels"] == len(pts)
        assert b["volume_mm3"] == pytest.approx(len(pts) * abs(np.linalg.det(stored[:3, :3])),
                                              rel=1e-9)
        np.testing.assert_allclose(b["centroid_voxel"], pts.mean(0), atol=1e-9)
        np.testing.assert_allclose(b["centroid_mm"], (lps @ np.append(pts.mean(0), 1))[:3],
                                   atol=1e-6)
        assert b["bbox"]["min_voxel"] == pts.min(0).astype(int).tolist()
        assert b["bbox"]["max_voxel"] == pts.max(0).astype(int).tolist()
        assert b["pass_agreement"] == 1.0
        assert b["mean_spread"] == 0.0
