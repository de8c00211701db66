"""Reusable independent checks of a finished run's blobs against its written maps."""

from __future__ import annotations


import numpy as np
from scipy import ndimage

from conftest import RunOutput, lps_affine

STRUCTURE_RANK = {6: 1, 18: 2, 26: 3}
RTOL = 1e-5
ATOL = 1e-6


def close(a, b, rtol=RTOL, atol=ATOL) -> bool:
    return abs(float(a) - float(b)) <= atol + rtol * abs(float(b))


def expected_components(logit: np.ndarray, threshold: float, connectivity: int):
    """scipy's components of logit > threshold (the comparison in float32, as the maps are)."""
    mask = logit > np.float32(threshold)
    lab, n = ndimage.label(mask, ndimage.generate_binary_structure(3, STRUCTURE_RANK[connectivity]))
    return mask, lab, n


def check_partition(labels: np.ndarray, logit: np.ndarray, threshold: float,
                    connectivity: int, min_voxels: int) -> int:
    """labels must be scipy's partition of (logit > threshold) up to relabelling, with
    components smaller than min_voxels removed, ids 1..n ordered by voxel count (desc).
    Returns the number of blobs."""
    assert np.issubdtype(labels.dtype, np.integer), labels.dtype
    mask, lab, n = expected_components(logit, threshold, connectivity)
    assert np.all(labels[~mask] == 0), (
        f"{int((labels[~mask] != 0).sum())} labelled voxels are not above the threshold")
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    pairs = np.unique(np.stack([lab[mask], labels[mask]], 1), axis=0)
    # every scipy component maps to exactly one id
    comp, counts = np.unique(pairs[:, 0], return_counts=True)
    split = comp[counts > 1]
    assert split.size == 0, (
        f"{split.size} scipy components ({connectivity}-connectivity) carry several ids, "
        f"e.g. component of {sizes[split[0]]} voxels has ids "
        f"{pairs[pairs[:, 0] == split[0], 1].tolist()}")
    comp_id = dict(map(tuple, pairs))
    small = [c for c in range(1, n + 1) if sizes[c] < min_voxels]
    big = [c for c in range(1, n + 1) if sizes[c] >= min_voxels]
    assert all(comp_id[c] == 0 for c in small), "a component below min_voxels was kept"
    assert all(comp_id[c] != 0 for c in big), "a component of >= min_voxels was dropped"
    ids = [comp_id[c] for c in big]
    assert len(set(ids)) == len(ids), "two scipy components share one id (merged)"
    assert sorted(ids) == list(range(1, len(ids) + 1)), "ids are not 1..n"
    by_id = np.zeros(len(ids) + 1, dtype=np.int64)
    for c in big:
        by_id[comp_id[c]] = sizes[c]
    assert np.all(np.diff(by_id[1:]) <= 0), "ids are not ordered by voxel count (desc)"
    return len(ids)


def logit(p: np.ndarray) -> np.ndarray:
    """logit of a float32 probability map.  The binary clamps p to [1e-7, 1 - 1e-7] in float32
    before taking the logit (src/aggregate.rs); saturated probabilities (p == 1.0f) make that
    clamp visible (logit 15.94 rather than 16.12), so it is mirrored here."""
    lo = np.float32(1e-7)
    hi = np.float32(1.0) - np.float32(1e-7)
    p = np.clip(p.astype(np.float32), lo, hi).astype(np.float64)
    return np.log(p / (1 - p))


def aggregated_logit(r: RunOutput) -> np.ndarray:
    """The logit the binary thresholds: the mean logit, or the logit of the mean probability."""
    agg = r.report["ensemble"]["aggregation"]
    if agg == "mean_logit":
        return r.map("mean_logits")
    assert agg == "mean_probability", agg
    return logit(r.map("probability"))


def blob_measurements(labels: np.ndarray, maps: dict, affine_ras: np.ndarray) -> list[dict]:
    """Per-blob statistics from the maps (nibabel order arrays), computed with numpy/scipy;
    maps["aggregated"] is the thresholded logit."""
    n = int(labels.max())
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1).astype(np.float64)
    ijk = np.indices(labels.shape).reshape(3, -1).astype(np.float64)
    cent = [np.bincount(flat, weights=ijk[a], minlength=n + 1) for a in range(3)]
    sums = {k: np.bincount(flat, weights=v.ravel().astype(np.float64), minlength=n + 1)
            for k, v in maps.items()}
    ids = np.arange(1, n + 1)
    maxima = ndimage.maximum(maps["aggregated"].astype(np.float64), labels, ids) if n else []
    boxes = ndimage.find_objects(labels)
    lps = lps_affine(affine_ras)
    voxel_volume = abs(np.linalg.det(affine_ras[:3, :3]))
    out = []
    for b in range(1, n + 1):
        c = np.array([cent[a][b] / counts[b] for a in range(3)])
        out.append({
            "id": b,
            "voxels": int(counts[b]),
            "volume_mm3": counts[b] * voxel_volume,
            "centroid_voxel": c,
            "centroid_mm": (lps @ np.append(c, 1.0))[:3],
            "bbox_min": [s.start for s in boxes[b - 1]],
            "bbox_max": [s.stop - 1 for s in boxes[b - 1]],
            "mean_logit": sums["aggregated"][b] / counts[b],
            "max_logit": float(maxima[b - 1]),
            "mean_probability": sums["probability"][b] / counts[b],
            "mean_spread": sums["std_logits"][b] / counts[b],
        })
    return out


def check_blob_report(r: RunOutput) -> list[dict]:
    """The report's blobs against numpy on the written maps; returns the measurements."""
    rep = r.report
    th = rep["thresholds"]
    labels = r.map("labels")
    maps = {k: r.map(k) for k in ("probability", "std_logits")}
    maps["aggregated"] = aggregated_logit(r)
    mean_logit_mode = rep["ensemble"]["aggregation"] == "mean_logit"
    if mean_logit_mode:
        n = check_partition(labels, maps["aggregated"], th["logit"], th["connectivity"],
                            th["min_voxels"])
    else:
        # logit(p) > 0 exactly when p > 0.5 (float32: 1 - p is exact for p >= 0.5)
        assert th["logit"] == 0, "mean_probability checks are written for threshold 0"
        n = check_partition(labels, maps["probability"], 0.5, th["connectivity"],
                            th["min_voxels"])
    blobs = rep["blobs"]
    assert len(blobs) == n, f"report lists {len(blobs)} blobs, labels.nii.gz has {n}"
    assert [b["id"] for b in blobs] == list(range(1, n + 1))
    affine = r.img("labels").affine
    meas = blob_measurements(labels, maps, affine)
    total = rep["ensemble"]["total_passes"]
    names = [m["name"] for m in rep["models"]]
    for b, m in zip(blobs, meas):
        where = f"blob {b['id']}"
        assert b["voxels"] == m["voxels"], where
        assert close(b["volume_mm3"], m["volume_mm3"], 1e-9, 1e-9), where
        for a in range(3):
            assert close(b["centroid_voxel"][a], m["centroid_voxel"][a], 1e-9, 1e-6), \
                (where, "centroid_voxel", b["centroid_voxel"], m["centroid_voxel"])
            assert close(b["centroid_mm"][a], m["centroid_mm"][a], 1e-9, 1e-5), \
                (where, "centroid_mm", b["centroid_mm"], m["centroid_mm"])
        assert b["bbox"]["min_voxel"] == m["bbox_min"], (where, b["bbox"], m)
        assert b["bbox"]["max_voxel"] == m["bbox_max"], (where, b["bbox"], m)
        for key in ("mean_logit", "max_logit", "mean_probability", "mean_spread"):
            # logit(p) of the float32 probability map, recomputed in float64: 1e-5 absolute
            atol = ATOL if mean_logit_mode or "logit" not in key else 1e-5
            assert close(b[key], m[key], atol=atol), (where, key, b[key], m[key])
        # ties in size are broken by mean logit, highest first (src/blobs.rs)
        # pass-level fields: internal consistency
        assert sorted(b["model_mean_logits"]) == sorted(names), where
        pa = b["pass_agreement"] * total
        assert abs(pa - round(pa)) < 1e-9, (where, b["pass_agreement"], total)
        assert b["pass_logit_std"] >= 0
        # equal passes per model: the mean of the per-model means is the blob's mean logit,
        # up to the storage precision of the passes (half-precision: 2^-11 relative)
        if not mean_logit_mode:
            continue
        mm = np.mean(list(b["model_mean_logits"].values()))
        bound = 2.0 ** -11 * (abs(b["max_logit"]) + abs(b["mean_logit"])
                              + 8 * b["mean_spread"] + 1e-3)
        assert abs(mm - b["mean_logit"]) <= max(bound, 1e-4), (where, mm, b["mean_logit"])
    for b1, b2 in zip(blobs, blobs[1:]):
        assert b1["voxels"] >= b2["voxels"]
        if b1["voxels"] == b2["voxels"]:
            assert b1["mean_logit"] >= b2["mean_logit"] - 1e-12, (b1["id"], b2["id"])
    return meas
