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
                   weighting: str = "gaussian", batch: int = 4) -> np.ndarray:
    """image float32 [c, z, y, x] -> stitched channel-0 logits float32 [z, y, x]."""
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
    num = np.zeros(shape, np.float32)
    den = np.zeros(shape, np.float32)
    for b0 in range(0, len(wins), batch):
        chunk = wins[b0:b0 + batch]
        xb = np.zeros((batch, image.shape[0]) + patch, np.float32)
        for i, (z, y, x) in enumerate(chunk):
            xb[i] = padded[:, z:z + patch[0], y:y + patch[1], x:x + patch[2]]
        out = sess.run([oname], {iname: xb})[0]
        for i, (z, y, x) in enumerate(chunk):
            sl = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
            num[sl] += imp * out[i, 0]
            den[sl] += imp
    res = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    crop = tuple(slice(b, b + s) for (b, _), s in zip(pads, spatial))
    return res[crop]


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
