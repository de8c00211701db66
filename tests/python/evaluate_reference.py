"""Independent reference for `stochseg evaluate` (numpy, scipy.ndimage, scikit-learn).

    python tests/python/evaluate_reference.py COHORT GT [--gt-pattern '{case}/{case}-seg.nii.gz']
        [--gt-dilation 3] [--lesion-min-volume-mm3 50]

prints JSON: per case and region Dice, the BraTS 2023/2024 lesion-wise numbers (written here
from the rule as docs/evaluation.md states it: GT lesions are the 26-connected components of the
region's GT dilated d times with generate_binary_structure(3, 2), restricted to the GT voxels; a
26-connected prediction component matches every lesion whose own d-times dilation it touches;
unmatched components are false positives; lesions of at most the volume threshold, from the
header's zooms, leave the score) and blob truth (a voxel in the region's GT dilated d times),
and, pooled over blobs per region, ROC AUC, average precision and the Youden threshold of each
score, computed with scikit-learn; and the Dice of each label of the BraTS label maps.

Regions are read from the report.json as plain JSON: the primary region `region` (a version 1
report has none: WT, every non-zero label) with the top-level blobs and comparison and the map
labels.nii.gz, and the other entries of `regions` with theirs and labels-<name>.nii.gz. A
region's GT is seg in its labels (seg > 0 without labels), its prediction the labels map > 0.
The top-level `cases`, `blobs` and `detectors` are the primary regions'.

`uncertainty_reference` recomputes the uncertainty measures, voxel by voxel with numpy masks:
the QU-BraTS curves as the challenge's paper and scorer define them (thresholds
np.arange(0, 100 + eps, 100 / 40) from the top, voxels with uncertainty > tau filtered, Dice of the
rest over the grid, filtered TP and TN ratios inside the brain over count + float32 eps, areas by
sklearn.metrics.auc over tau / 100), the retention curve (brain voxels from the most uncertain,
ties referred in proportion: the fixed errors interpolated with np.interp between the ends of
the tie groups) and the voxels' calibration (np.histogram over 10 bins of [0, 1]); the brain
mask is every voxel where an input channel (report case.inputs, read with nibabel) is nonzero.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, roc_auc_score, roc_curve


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, truth).sum() / total)


STRUCTURE_18 = ndimage.generate_binary_structure(3, 2)
CUBE_26 = np.ones((3, 3, 3), dtype=bool)


def dilate(mask: np.ndarray, times: int) -> np.ndarray:
    # scipy reads iterations=0 as "until nothing changes": 0 dilations is the mask itself
    if times == 0:
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=STRUCTURE_18, iterations=times)


def lesion_wise(gt: np.ndarray, pred: np.ndarray, voxel_mm3: float, d: int,
                min_mm3: float) -> dict:
    groups, _ = ndimage.label(dilate(gt, d), structure=CUBE_26)
    lesions = np.where(gt, groups, 0)
    components, n_components = ndimage.label(pred, structure=CUBE_26)
    matched, scores = set(), []
    small = 0
    for lesion in np.unique(lesions[lesions > 0]):
        own = lesions == lesion
        hits = set(np.unique(components[dilate(own, d)]).tolist()) - {0}
        matched |= hits
        if own.sum() * voxel_mm3 <= min_mm3:
            small += 1
            continue
        scores.append((bool(hits), dice(np.isin(components, sorted(hits)), own)))
    tp = sum(hit for hit, _ in scores)
    fp = n_components - len(matched)
    denominator = len(scores) + fp
    return {"gt_lesions": int(len(np.unique(lesions)) - 1), "small_lesions": small,
            "lesion_tp": tp, "lesion_fn": len(scores) - tp, "lesion_fp": fp,
            "lesion_dice": 1.0 if denominator == 0 else sum(s for _, s in scores) / denominator,
            "lesion_sensitivity": tp / len(scores) if scores else None}


def youden(y: np.ndarray, s: np.ndarray):
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    j = tpr - fpr
    best = int(np.argmax(j))  # thresholds decrease: the first maximum is the highest threshold
    return float(thresholds[best]), float(j[best])


def region_list(report: dict) -> list[dict]:
    """The primary region, then the others by name: name, labels, map file, blobs, comparison."""
    primary = report.get("region", {"name": "WT", "labels": None})
    out = [{"name": primary["name"], "labels": primary["labels"], "map": "labels.nii.gz",
            "blobs": report["blobs"], "comparison": report.get("comparison")}]
    for name in sorted(report.get("regions") or {}):
        if name != primary["name"]:
            entry = report["regions"][name]
            out.append({"name": name, "labels": entry["labels"], "map": f"labels-{name}.nii.gz",
                        "blobs": entry["blobs"], "comparison": entry.get("comparison")})
    return out


def region_gt(seg: np.ndarray, labels) -> np.ndarray:
    return seg > 0 if labels is None else np.isin(seg, labels)


def load_int(path: Path) -> np.ndarray:
    return np.rint(np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)).astype(np.int64)


def detectors_of(blobs: list[dict]) -> dict:
    y = np.array([b["true"] for b in blobs])
    scores = {"mean_logit": [b["mean_logit"] for b in blobs]}
    if blobs and all(b["deterministic_mean_logit"] is not None for b in blobs):
        scores["deterministic_mean_logit"] = [b["deterministic_mean_logit"] for b in blobs]
    out = {}
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        if 0 < y.sum() < len(y):
            t, j = youden(y, s)
            out[name] = {"auc": float(roc_auc_score(y, s)),
                         "average_precision": float(average_precision_score(y, s)),
                         "youden_threshold": t, "youden_j": j}
    return out


def evaluate_region(folder: Path, case: str, region: dict, seg: np.ndarray, voxel_mm3: float,
                    gt_dilation: int, min_volume_mm3: float) -> tuple[dict, list[dict]]:
    labels = load_int(folder / region["map"])
    truth = region_gt(seg, region["labels"])
    pred = labels > 0
    near_gt = dilate(truth, gt_dilation)
    comparison = region["comparison"] or {}
    det = {r["id"]: r["deterministic_mean_logit"] for r in comparison.get("blobs", [])}
    blobs = []
    for b in region["blobs"]:
        inside = labels == b["id"]
        blobs.append({"case": case, "folder": folder.name, "region": region["name"],
                      "id": b["id"],
                      "true": bool(near_gt[inside].any()),
                      "overlap_voxels": int((inside & truth).sum()),
                      "mean_logit": b["mean_logit"], "mean_probability": b["mean_probability"],
                      "deterministic_mean_logit": det.get(b["id"])})
    row = {"case": case, "folder": folder.name, "region": region["name"],
           "dice": dice(pred, truth), "gt_voxels": int(truth.sum()),
           "predicted_voxels": int(pred.sum()), "blobs": len(blobs),
           "true_blobs": int(sum(b["true"] for b in blobs)),
           **lesion_wise(truth, pred, voxel_mm3, gt_dilation, min_volume_mm3)}
    return row, blobs


def reference(cohort: Path, gt_dir: Path, pattern: str = "{case}/{case}-seg.nii.gz",
              gt_dilation: int = 3, min_volume_mm3: float = 50.0) -> dict:
    regions: dict = {}
    primary_rows, primary_blobs, label_rows = [], [], []
    for folder in sorted(p for p in Path(cohort).iterdir() if (p / "report.json").is_file()):
        report = json.loads((folder / "report.json").read_text())
        case = report["case"]["id"]
        gt_path = Path(gt_dir) / pattern.replace("{case}", case).replace("{folder}", folder.name)
        gt_image = nib.load(str(gt_path))
        seg = load_int(gt_path)
        voxel_mm3 = float(np.prod(gt_image.header.get_zooms()[:3]))
        for i, region in enumerate(region_list(report)):
            row, blobs = evaluate_region(folder, case, region, seg, voxel_mm3, gt_dilation,
                                         min_volume_mm3)
            entry = regions.setdefault(region["name"], {"cases": [], "blobs": []})
            entry["cases"].append(row)
            entry["blobs"] += blobs
            if i == 0:
                primary_rows.append(row)
                primary_blobs += blobs
        if report.get("label_map"):
            brats = load_int(folder / "labels-brats.nii.gz")
            for entry in report["label_map"]["labels"]:
                pred, truth = brats == entry["label"], seg == entry["label"]
                label_rows.append({"case": case, "folder": folder.name,
                                   "label": entry["label"], "name": entry["name"],
                                   "gt_voxels": int(truth.sum()),
                                   "predicted_voxels": int(pred.sum()),
                                   "dice": dice(pred, truth)})
    for entry in regions.values():
        entry["detectors"] = detectors_of(entry["blobs"])
    return {"cases": primary_rows, "blobs": primary_blobs,
            "detectors": detectors_of(primary_blobs), "regions": regions, "labels": label_rows}


EPS32 = float(np.finfo(np.float32).eps)


def qubrats(pred: np.ndarray, truth: np.ndarray, uncertainty: np.ndarray, brain: np.ndarray,
            points: int = 40) -> dict:
    taus = np.arange(0.0, 100.0 + EPS32, 100.0 / points)[::-1]
    tp_brain = pred & truth & brain
    tn_brain = ~pred & ~truth & brain
    curves = {"dice": [], "ftp_ratio": [], "ftn_ratio": []}
    for tau in taus:
        keep = uncertainty <= tau
        curves["dice"].append(dice(pred & keep, truth & keep))
        curves["ftp_ratio"].append(float((tp_brain & ~keep).sum() / (tp_brain.sum() + EPS32)))
        curves["ftn_ratio"].append(float((tn_brain & ~keep).sum() / (tn_brain.sum() + EPS32)))
    areas = {k: float(auc(taus / 100.0, v)) for k, v in curves.items()}
    return {"thresholds": taus.tolist(), **curves, "auc_dice": areas["dice"],
            "auc_ftp": areas["ftp_ratio"], "auc_ftn": areas["ftn_ratio"],
            "score": (areas["dice"] + (1 - areas["ftp_ratio"]) + (1 - areas["ftn_ratio"])) / 3}


def retention(pred: np.ndarray, truth: np.ndarray, uncertainty: np.ndarray, brain: np.ndarray,
              steps: int = 20) -> dict:
    p, t, u = pred[brain], truth[brain], uncertainty[brain].astype(np.int64)
    order = np.argsort(-u, kind="stable")
    u_sorted = u[order]
    fn = np.cumsum((~p & t)[order])
    fp = np.cumsum((p & ~t)[order])
    # the ends of the tie groups (and the start): referral is linear within a group
    ends = np.flatnonzero(np.r_[u_sorted[1:] != u_sorted[:-1], True]) + 1
    at = np.r_[0, ends]
    fixed_fn = np.r_[0, fn[ends - 1]] if len(u) else np.zeros(1)
    fixed_fp = np.r_[0, fp[ends - 1]] if len(u) else np.zeros(1)
    tp0, fp0, fn0 = (p & t).sum(), (p & ~t).sum(), (~p & t).sum()
    fractions = np.linspace(0.0, 1.0, steps + 1)
    curve = []
    for f in fractions:
        r = f * len(u)
        a, b = np.interp(r, at, fixed_fn), np.interp(r, at, fixed_fp)
        tp, fp_, fn_ = tp0 + a, fp0 - b, fn0 - a
        total = 2 * tp + fp_ + fn_
        curve.append(1.0 if total == 0 else float(2 * tp / total))
    return {"referred_fraction": fractions.tolist(), "dice": curve,
            "auc": float(auc(fractions, curve))}


def reliability(probability: np.ndarray, truth: np.ndarray, brain: np.ndarray, bins: int = 10):
    """(voxels, probability sums, voxels in the GT) per bin of the brain's voxels."""
    p, t = probability[brain].astype(np.float64), truth[brain]
    edges = np.linspace(0.0, 1.0, bins + 1)
    count, _ = np.histogram(p, edges)
    total, _ = np.histogram(p, edges, weights=p)
    in_gt, _ = np.histogram(p[t], edges)
    return count, total, in_gt


def ece(count, total, in_gt) -> float | None:
    n = count.sum()
    if n == 0:
        return None
    used = count > 0
    gap = np.abs(total[used] / count[used] - in_gt[used] / count[used])
    return float((count[used] / n * gap).sum())


def brain_of(report: dict) -> np.ndarray:
    channels = [np.asarray(nib.load(i["path"]).dataobj) for i in report["case"]["inputs"]]
    return np.any(np.stack(channels) != 0, axis=0)


def uncertainty_reference(cohort: Path, gt_dir: Path, pattern: str = "{case}/{case}-seg.nii.gz",
                          points: int = 40, steps: int = 20, bins: int = 10) -> dict:
    """Per (folder, region) with maps: QU-BraTS, retention and ECE; per region pooled."""
    rows, pooled = {}, {}
    for folder in sorted(p for p in Path(cohort).iterdir() if (p / "report.json").is_file()):
        report = json.loads((folder / "report.json").read_text())
        case = report["case"]["id"]
        gt_path = Path(gt_dir) / pattern.replace("{case}", case).replace("{folder}", folder.name)
        seg = load_int(gt_path)
        brain = None
        for i, region in enumerate(region_list(report)):
            u_path = folder / f"uncertainty-{region['name']}.nii.gz"
            p_path = folder / ("probability.nii.gz" if i == 0
                               else f"probability-{region['name']}.nii.gz")
            if not (u_path.is_file() or p_path.is_file()):
                continue
            brain = brain_of(report) if brain is None else brain
            truth = region_gt(seg, region["labels"])
            pred = load_int(folder / region["map"]) > 0
            row, sums = {}, pooled.setdefault(region["name"], {"q": [], "r": [], "bins": []})
            if u_path.is_file():
                u = np.asarray(nib.load(str(u_path)).dataobj)
                row["qubrats"] = qubrats(pred, truth, u, brain, points)
                row["retention"] = retention(pred, truth, u, brain, steps)
                sums["q"].append(row["qubrats"])
                sums["r"].append(row["retention"])
            if p_path.is_file():
                prob = np.asarray(nib.load(str(p_path)).dataobj, dtype=np.float32)
                counts = reliability(prob, truth, brain, bins)
                row["ece"] = ece(*counts)
                sums["bins"].append(counts)
            rows[(folder.name, region["name"])] = row
    regions = {}
    for name, sums in pooled.items():
        out = {}
        if sums["q"]:
            out["qubrats"] = {k: float(np.mean([q[k] for q in sums["q"]]))
                              for k in ("score", "auc_dice", "auc_ftp", "auc_ftn")}
            for k in ("dice", "ftp_ratio", "ftn_ratio"):
                out["qubrats"][k] = np.mean([q[k] for q in sums["q"]], axis=0).tolist()
            out["retention"] = {"auc": float(np.mean([r["auc"] for r in sums["r"]])),
                                "dice": np.mean([r["dice"] for r in sums["r"]], axis=0).tolist()}
        if sums["bins"]:
            count, total, in_gt = (np.sum([b[k] for b in sums["bins"]], axis=0) for k in range(3))
            out["voxel_calibration"] = {"ece": ece(count, total, in_gt),
                                        "voxels": int(count.sum()), "count": count.tolist(),
                                        "mean_probability": [None if c == 0 else float(s / c)
                                                             for s, c in zip(total, count)],
                                        "fraction_in_gt": [None if c == 0 else float(g / c)
                                                           for g, c in zip(in_gt, count)]}
        regions[name] = out
    return {"rows": rows, "regions": regions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cohort", type=Path)
    ap.add_argument("gt", type=Path)
    ap.add_argument("--gt-pattern", default="{case}/{case}-seg.nii.gz")
    ap.add_argument("--gt-dilation", type=int, default=3)
    ap.add_argument("--lesion-min-volume-mm3", type=float, default=50.0)
    a = ap.parse_args()
    print(json.dumps(reference(a.cohort, a.gt, a.gt_pattern, a.gt_dilation,
                               a.lesion_min_volume_mm3), indent=1))


if __name__ == "__main__":
    main()
