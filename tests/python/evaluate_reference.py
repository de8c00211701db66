"""Independent reference for `stochseg evaluate` (numpy, scipy.ndimage, scikit-learn).

    python tests/python/evaluate_reference.py COHORT GT [--gt-pattern '{case}/{case}-seg.nii.gz']
        [--gt-dilation 3] [--lesion-min-volume-mm3 50]

prints JSON: per case Dice, the BraTS 2023/2024 lesion-wise numbers on the whole tumor (written
here from the rule as docs/evaluation.md states it: GT lesions are the 26-connected components of seg > 0
dilated d times with generate_binary_structure(3, 2), restricted to the GT voxels; a 26-connected
prediction component matches every lesion whose own d-times dilation it touches; unmatched
components are false positives; lesions of at most the volume threshold, from the header's
zooms, leave the score) and blob truth (a voxel in seg > 0 dilated d times), and, pooled over
blobs, ROC AUC, average precision and the Youden threshold of each score, computed with
scikit-learn.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


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


def reference(cohort: Path, gt_dir: Path, pattern: str = "{case}/{case}-seg.nii.gz",
              gt_dilation: int = 3, min_volume_mm3: float = 50.0) -> dict:
    cases, blobs = [], []
    for folder in sorted(p for p in Path(cohort).iterdir() if (p / "report.json").is_file()):
        report = json.loads((folder / "report.json").read_text())
        case = report["case"]["id"]
        gt_path = Path(gt_dir) / pattern.replace("{case}", case).replace("{folder}", folder.name)
        labels = np.asarray(nib.load(str(folder / "labels.nii.gz")).dataobj).astype(np.int64)
        gt_image = nib.load(str(gt_path))
        gt = np.asarray(gt_image.dataobj) > 0
        voxel_mm3 = float(np.prod(gt_image.header.get_zooms()[:3]))
        near_gt = dilate(gt, gt_dilation)
        det = {r["id"]: r["deterministic_mean_logit"]
               for r in report.get("comparison", {}).get("blobs", [])}
        for b in report["blobs"]:
            inside = labels == b["id"]
            blobs.append({"case": case, "id": b["id"], "true": bool(near_gt[inside].any()),
                          "mean_logit": b["mean_logit"],
                          "mean_probability": b["mean_probability"],
                          "deterministic_mean_logit": det.get(b["id"])})
        truth = [x["true"] for x in blobs if x["case"] == case]
        cases.append({"case": case, "dice": dice(labels > 0, gt), "blobs": len(truth),
                      "true_blobs": int(sum(truth)),
                      **lesion_wise(gt, labels > 0, voxel_mm3, gt_dilation, min_volume_mm3)})
    y = np.array([b["true"] for b in blobs])
    detectors = {}
    scores = {"mean_logit": [b["mean_logit"] for b in blobs]}
    if blobs and all(b["deterministic_mean_logit"] is not None for b in blobs):
        scores["deterministic_mean_logit"] = [b["deterministic_mean_logit"] for b in blobs]
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        if 0 < y.sum() < len(y):
            t, j = youden(y, s)
            detectors[name] = {"auc": float(roc_auc_score(y, s)),
                               "average_precision": float(average_precision_score(y, s)),
                               "youden_threshold": t, "youden_j": j}
    return {"cases": cases, "blobs": blobs, "detectors": detectors}


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
