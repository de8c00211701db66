"""Independent reference for `stochseg evaluate` (numpy, scipy.ndimage, scikit-learn).

    python tests/python/evaluate_reference.py COHORT GT [--gt-pattern '{case}/{case}-seg.nii.gz']

prints JSON: per case Dice, GT lesion count, detected lesions and blob truth (the same rule as
src/evaluate.rs: GT lesions are 26-connected components of seg > 0; a blob is true when any of
its voxels lies in seg > 0), and, pooled over blobs, ROC AUC, average precision and the Youden
threshold of each score, computed with scikit-learn.
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


def youden(y: np.ndarray, s: np.ndarray):
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    j = tpr - fpr
    best = int(np.argmax(j))  # thresholds decrease: the first maximum is the highest threshold
    return float(thresholds[best]), float(j[best])


def reference(cohort: Path, gt_dir: Path, pattern: str = "{case}/{case}-seg.nii.gz") -> dict:
    cases, blobs = [], []
    for folder in sorted(p for p in Path(cohort).iterdir() if (p / "report.json").is_file()):
        report = json.loads((folder / "report.json").read_text())
        case = report["case"]["id"]
        gt_path = Path(gt_dir) / pattern.replace("{case}", case).replace("{folder}", folder.name)
        labels = np.asarray(nib.load(str(folder / "labels.nii.gz")).dataobj).astype(np.int64)
        gt = np.asarray(nib.load(str(gt_path)).dataobj) > 0
        lesions, n = ndimage.label(gt, structure=np.ones((3, 3, 3)))
        detected = set(np.unique(lesions[(labels > 0) & (lesions > 0)])) - {0}
        det = {r["id"]: r["deterministic_mean_logit"]
               for r in report.get("comparison", {}).get("blobs", [])}
        for b in report["blobs"]:
            inside = labels == b["id"]
            blobs.append({"case": case, "id": b["id"], "true": bool(gt[inside].any()),
                          "mean_logit": b["mean_logit"],
                          "mean_probability": b["mean_probability"],
                          "deterministic_mean_logit": det.get(b["id"])})
        truth = [x["true"] for x in blobs if x["case"] == case]
        cases.append({"case": case, "dice": dice(labels > 0, gt), "gt_lesions": int(n),
                      "detected_lesions": len(detected), "blobs": len(truth),
                      "true_blobs": int(sum(truth))})
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
    a = ap.parse_args()
    print(json.dumps(reference(a.cohort, a.gt, a.gt_pattern), indent=1))


if __name__ == "__main__":
    main()
