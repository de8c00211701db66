"""Independent reference implementations (numpy + onnxruntime's Python API) of the rules the
binary documents, used where no golden file exists (e.g. the cropped run).

Sliding window (src/window.rs doc comment, tests/fixtures/golden/make_golden.py docstring):
an axis shorter than the patch is zero-padded to it (floor(diff / 2) before); n windows with
n = ceil((S - P) / (P * (1 - overlap))) + 1 (1 when S <= P), start_i = floor(i * (S - P) /
(n - 1) + 0.5); Gaussian importance exp(-0.5 ((t - (P - 1) / 2) / (P / 8))^2) per axis, outer
product scaled to max 1; result = sum(w * out) / sum(w).
"""

from __future__ import annotations

import math

import numpy as np


def window_starts(size: int, patch: int, overlap: float = 0.5) -> list[int]:
    if size <= patch:
        return [0]
    n = int(math.ceil((size - patch) / (patch * (1.0 - overlap)))) + 1
    step = (size - patch) / (n - 1)
    return [int(math.floor(step * i + 0.5)) for i in range(n)]


def gaussian_1d(p: int) -> np.ndarray:
    t = np.arange(p, dtype=np.float64)
    return np.exp(-0.5 * ((t - (p - 1) / 2.0) / (p / 8.0)) ** 2)


def importance(patch, weighting: str = "gaussian") -> np.ndarray:
    if weighting == "constant":
        return np.ones(patch, dtype=np.float32)
    g = np.einsum("a,b,c->abc", *[gaussian_1d(p) for p in patch])
    return (g / g.max()).astype(np.float32)


def session(path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def model_patch(sess) -> tuple:
    meta = sess.get_modelmeta().custom_metadata_map
    if "patch_size" in meta:
        return tuple(int(v) for v in meta["patch_size"].split(","))
    return tuple(int(v) for v in sess.get_inputs()[0].shape[2:5])


def sliding_window(sess, image: np.ndarray, patch=None, overlap: float = 0.5,
                   weighting: str = "gaussian", batch: int = 4,
                   all_channels: bool = False) -> np.ndarray:
    """image float32 [c, z, y, x] -> stitched channel-0 logits float32 [z, y, x], or with
    all_channels every output channel stitched, float32 [C, z, y, x] (each channel by the
    same float32 arithmetic as channel 0, so its channel 0 is the channel-0 result)."""
    patch = tuple(patch or model_patch(sess))
    spatial = image.shape[1:]
    pads = []
    for s, p in zip(spatial, patch):
        d = max(p - s, 0)
        pads.append((d // 2, d - d // 2))
    padded = np.pad(image, [(0, 0)] + pads)
    shape = padded.shape[1:]
    starts = [window_starts(s, p, overlap) for s, p in zip(shape, patch)]
    wins = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
    fixed = sess.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed > 0:
        batch = fixed
    iname, oname = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    imp = importance(patch, weighting)
    num = None
    den = np.zeros(shape, np.float32)
    for b0 in range(0, len(wins), batch):
        chunk = wins[b0:b0 + batch]
        xb = np.zeros((batch, image.shape[0]) + patch, np.float32)
        for i, (z, y, x) in enumerate(chunk):
            xb[i] = padded[:, z:z + patch[0], y:y + patch[1], x:x + patch[2]]
        out = sess.run([oname], {iname: xb})[0]
        if not all_channels:
            out = out[:, :1]
        if num is None:
            num = np.zeros((out.shape[1],) + shape, np.float32)
        for i, (z, y, x) in enumerate(chunk):
            sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
            num[(slice(None),) + sl] += imp * out[i]
            den[sl] += imp
    res = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    crop = tuple(slice(b, b + s) for (b, _), s in zip(pads, spatial))
    res = res[(slice(None),) + crop]
    return res if all_channels else res[0]


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """log(sum(exp(x), axis 0)) in float64, shifted by the maximum (no overflow)."""
    m = x.max(0)
    return m + np.log(np.exp(x - m).sum(0))


def region_log_odds(class_logits: np.ndarray, class_labels, region_labels) -> np.ndarray:
    """Log-odds of a region under a softmax model (output-declaration spec): for class logits
    l_c [C, ...] with class c carrying the label class_labels[c],
    log(sum_{c in R} exp(l_c)) - log(sum_{c not in R} exp(l_c)), R = the classes whose label
    is in region_labels.  Computed in float64 by log-sum-exp, returned as float32.  A region
    with a label the model has no class for, or one covering every class, is an error."""
    class_labels = [int(v) for v in class_labels]
    region_labels = {int(v) for v in region_labels}
    if len(class_labels) != class_logits.shape[0]:
        raise ValueError(f"{class_logits.shape[0]} channels, {len(class_labels)} class labels")
    if not region_labels or region_labels - set(class_labels):
        raise ValueError(f"region {sorted(region_labels)} is not made of classes {class_labels}")
    inside = [c for c, v in enumerate(class_labels) if v in region_labels]
    outside = [c for c, v in enumerate(class_labels) if v not in region_labels]
    if not outside:
        raise ValueError(f"region {sorted(region_labels)} covers every class")
    x = np.asarray(class_logits, dtype=np.float64)
    return (_logsumexp(x[inside]) - _logsumexp(x[outside])).astype(np.float32)


def brats_nested(wt: np.ndarray, tc: np.ndarray, et: np.ndarray, threshold: float = 0.0):
    """BraTS label map from aggregated region logits: ET > threshold -> 3, else TC -> 1 (NETC),
    else WT -> 2 (SNFH), else 0; uint8."""
    out = np.zeros(np.shape(wt), np.uint8)
    out[np.asarray(wt) > threshold] = 2
    out[np.asarray(tc) > threshold] = 1
    out[np.asarray(et) > threshold] = 3
    return out


def brats_argmax(mean_class_probabilities: np.ndarray, labels) -> np.ndarray:
    """BraTS label map of a softmax-only ensemble: per voxel the label of the class with the
    largest mean probability [C, ...] (ties: the first such class, as numpy's argmax); uint8."""
    labels = np.asarray(labels, dtype=np.uint8)
    if labels.shape[0] != mean_class_probabilities.shape[0]:
        raise ValueError(f"{mean_class_probabilities.shape[0]} channels, {len(labels)} labels")
    return labels[np.argmax(mean_class_probabilities, axis=0)]


def axis_coverage(size: int, patch: int, overlap: float = 0.5, radius: int = 1) -> np.ndarray:
    """f[d + radius, v]: Gaussian-weighted fraction of the windows covering v (along one axis)
    in which v + d also lies inside the window, for d in -radius..radius.  A linear model whose
    kernel zero-pads at patch borders, stitched by the rules above, weights its tap d at v by
    the product of the three axes' f (the weights are separable and the windows a grid)."""
    g = gaussian_1d(patch)
    t = np.arange(patch)
    num = np.zeros((2 * radius + 1, size))
    den = np.zeros(size)
    for s in window_starts(size, patch, overlap):
        den[s:s + patch] += g
        for j, d in enumerate(range(-radius, radius + 1)):
            num[j, s:s + patch] += g * (((t + d) >= 0) & ((t + d) < patch))
    return num / den
