#!/usr/bin/env python3
"""Plain numpy + onnxruntime (Python API, CPU provider) implementation of the stochseg ensemble.

The benchmark's baseline and cross-check: it computes what `stochseg run` computes, by the rules
the Rust sources document, written the way a careful numpy user would write it.

- Load the four channels (nibabel; scl_slope/scl_inter applied; affine = sform, else qform),
  reorient to the models' orientation (LPS; exact axis permutation/flip) and view as [z, y, x]
  (z = NIfTI axis k, x = NIfTI axis i).
- Brain mask = voxels where any channel is nonzero. Z-score per channel over the mask (mean and
  population std in float64, value = (x - mean) * (1 / max(std, 1e-8)), cast to float32), 0
  outside the mask. Crop to the mask's bounding box (margin 0), as nnU-Net does; with --no-crop
  the windows cover the whole grid instead (a plain sliding window, as MONAI's
  sliding_window_inference runs it, and as stochseg runs with `crop_to_nonzero: false`).
- Ensemble: per model, K passes on the normalized crop plus N(0, sigma^2) noise (numpy's PCG64,
  seeded once with --seed, drawn model by model, pass by pass; noise everywhere in the crop, or
  only inside the mask with --noise-region brain). sigma = 0 means no noise.
- Sliding window (src/window.rs): an axis shorter than the patch is zero-padded to it (floor(d/2)
  before); n = ceil((S - P) / (P (1 - overlap))) + 1 windows per axis (1 when S <= P), start_i =
  floor(i (S - P) / (n - 1) + 0.5); windows z outer, then y, then x; Gaussian importance per axis
  exp(-0.5 ((t - (P - 1)/2) / (P/8))^2), outer product in float64 scaled to max 1, float32; the
  stitched value is sum(w * out) / sum(w) (float32 accumulators). Patches go B at a time (the
  last batch is simply shorter, unless the model has a fixed batch dimension).
- Aggregate: sum and sum of squares of the logits over all passes in float64 -> mean and sample
  std (ddof = 1; 0 with one pass). Per model it also keeps the within-model variance across passes,
  from which it writes `noise_se_logits.nii.gz`: the standard error of the mean logit that is due
  to the noise alone, sqrt(sum_m var_m / K) / M (used by bench/run.py to judge stochastic
  agreement with a run that drew different noise).
- Outside the crop: mean logit -10 (the pipeline's outside_logit), std 0, label 0.
- Blobs: mean logit > threshold (0), 26-connected components (scipy.ndimage.label), ordered by
  voxel count (desc), mean logit (desc), first voxel in the input grid's raster order (i fastest).

Writes OUT/mean_logits.nii.gz, std_logits.nii.gz, labels.nii.gz (int32), noise_se_logits.nii.gz
(K > 1) and OUT/summary.json (blobs, crop, windows, timings per stage, time inside
InferenceSession.run, peak RSS).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
from scipy import ndimage

CHANNELS = ("t1n", "t1c", "t2w", "t2f")
OUTSIDE_LOGIT = -10.0


# ---------------------------------------------------------------------------------------------
# sliding-window rules (pure helpers; bench/run.py uses them to count windows)

def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """nnU-Net placement along one (padded) axis of length `size`."""
    if size <= patch:
        return [0]
    n = math.ceil((size - patch) / (patch * (1.0 - overlap))) + 1
    step = (size - patch) / (n - 1)
    return [int(math.floor(step * i + 0.5)) for i in range(n)]


def window_grid(shape_zyx, patch_zyx, overlap: float) -> list[list[int]]:
    """Start positions per axis for a crop of `shape_zyx` (padded up to the patch)."""
    return [window_starts(max(s, p), p, overlap) for s, p in zip(shape_zyx, patch_zyx)]


def window_count(shape_zyx, patch_zyx, overlap: float = 0.5) -> int:
    return int(np.prod([len(a) for a in window_grid(shape_zyx, patch_zyx, overlap)]))


def importance_map(patch_zyx, weighting: str = "gaussian") -> np.ndarray:
    if weighting == "constant":
        return np.ones(patch_zyx, dtype=np.float32)
    axes = []
    for p in patch_zyx:
        t = np.arange(p, dtype=np.float64)
        axes.append(np.exp(-0.5 * ((t - (p - 1) / 2.0) / (p / 8.0)) ** 2))
    g = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    g = (g / g.max()).astype(np.float32)
    return np.maximum(g, np.finfo(np.float32).tiny)


# ---------------------------------------------------------------------------------------------
# models

class Model:
    """One ONNX model on the CPU provider, with its patch size and the time spent in run()."""

    def __init__(self, path: Path, threads: int, spinning: bool, arena: bool = True):
        so = ort.SessionOptions()
        so.enable_cpu_mem_arena = arena
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        model_bytes = path.read_bytes()  # one read: the checksum is of what was loaded
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()
        self.session = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
        del model_bytes
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        if "patch_size" in meta:
            self.patch = tuple(int(v) for v in meta["patch_size"].split(","))
        else:
            self.patch = tuple(int(v) for v in inp.shape[2:5])
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.name = meta.get("name", path.stem)
        self.run_seconds = 0.0
        self.calls = 0
        self.patches = 0

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, D, H, W) float32 -> channel-0 logits (N, D, H, W) float32."""
        t = time.perf_counter()
        out = self.session.run([self.output_name], {self.input_name: batch})[0]
        self.run_seconds += time.perf_counter() - t
        self.calls += 1
        self.patches += batch.shape[0]
        return out[:, 0] if out.ndim == 5 else out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sliding_window(model: Model, image: np.ndarray, overlap: float, weighting: str,
                   batch_size: int, weight_cache: dict, timers: dict) -> np.ndarray:
    """image float32 [c, z, y, x] -> stitched logits float32 [z, y, x]."""
    patch = model.patch
    shape = image.shape[1:]
    pads = [((max(p - s, 0)) // 2, max(p - s, 0) - (max(p - s, 0)) // 2)
            for s, p in zip(shape, patch)]
    if any(b or a for b, a in pads):
        image = np.pad(image, [(0, 0)] + pads)
    padded = image.shape[1:]
    starts = window_grid(padded, patch, overlap)
    windows = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
    imp = importance_map(patch, weighting)
    acc = np.zeros(padded, dtype=np.float32)
    key = (model.path, padded)
    weights = weight_cache.get(key)
    batch = model.fixed_batch or max(1, min(batch_size, len(windows)))
    for first in range(0, len(windows), batch):
        group = windows[first:first + batch]
        t = time.perf_counter()
        patches = np.stack([image[:, z:z + patch[0], y:y + patch[1], x:x + patch[2]]
                            for z, y, x in group])
        if model.fixed_batch and len(group) < batch:
            fill = np.zeros((batch - len(group),) + patches.shape[1:], dtype=np.float32)
            patches = np.concatenate([patches, fill])
        timers["stitch"] += time.perf_counter() - t
        out = model.predict(np.ascontiguousarray(patches, dtype=np.float32))
        t = time.perf_counter()
        for (z, y, x), o in zip(group, out):
            acc[z:z + patch[0], y:y + patch[1], x:x + patch[2]] += imp * o
        timers["stitch"] += time.perf_counter() - t
    t = time.perf_counter()
    if weights is None:
        weights = np.zeros(padded, dtype=np.float32)
        for z, y, x in windows:
            weights[z:z + patch[0], y:y + patch[1], x:x + patch[2]] += imp
        weight_cache[key] = weights
    out = np.zeros_like(acc)
    np.divide(acc, weights, out=out, where=weights > 0)
    crop = tuple(slice(b, b + s) for (b, _), s in zip(pads, shape))
    timers["stitch"] += time.perf_counter() - t
    return out[crop]


# ---------------------------------------------------------------------------------------------
# case I/O and preprocessing

def find_channel(case_dir: Path, channel: str) -> Path:
    hits = sorted(p for p in case_dir.iterdir()
                  if p.name.endswith(f"-{channel}.nii.gz") or p.name.endswith(f"-{channel}.nii"))
    if len(hits) != 1:
        raise SystemExit(f"reference: {case_dir}: expected one *-{channel}.nii(.gz), found {hits}")
    return hits[0]


def load_case(case_dir: Path, channels):
    paths = [find_channel(case_dir, c) for c in channels]
    first = nib.load(str(paths[0]))
    data = []
    for p in paths:
        img = nib.load(str(p))
        if img.shape != first.shape or not np.allclose(img.affine, first.affine, atol=1e-3):
            raise SystemExit(f"reference: {p}: grid differs from {paths[0]}")
        data.append(np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32))
    return first, paths, data


def orientation_transforms(affine: np.ndarray, target: str = "LPS"):
    src = nib.orientations.io_orientation(affine)
    dst = nib.orientations.axcodes2ornt(tuple(target))
    return (nib.orientations.ornt_transform(src, dst), nib.orientations.ornt_transform(dst, src))


def to_canonical_zyx(vol_ijk: np.ndarray, xform) -> np.ndarray:
    return np.ascontiguousarray(nib.orientations.apply_orientation(vol_ijk, xform).transpose(2, 1, 0))


def to_input_ijk(vol_zyx: np.ndarray, back) -> np.ndarray:
    return np.ascontiguousarray(nib.orientations.apply_orientation(vol_zyx.transpose(2, 1, 0), back))


def preprocess(channels_ijk, xform, crop_to_nonzero: bool = True):
    canon = np.stack([to_canonical_zyx(c, xform) for c in channels_ijk])  # [c, z, y, x]
    brain = np.any(canon != 0, axis=0)
    if brain.any() and crop_to_nonzero:
        idx = [np.flatnonzero(brain.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
        start = [int(i[0]) for i in idx]
        end = [int(i[-1]) + 1 for i in idx]
    else:
        start, end = [0, 0, 0], list(brain.shape)
    box = tuple(slice(a, b) for a, b in zip(start, end))
    crop = canon[(slice(None),) + box]
    brain_crop = brain[box]
    image = np.zeros(crop.shape, dtype=np.float32)
    stats = []
    for c in range(crop.shape[0]):
        values = crop[c][brain_crop].astype(np.float64)
        if values.size:
            mean = float(values.mean())
            std = float(np.sqrt(np.mean((values - mean) ** 2)))
        else:
            mean, std = 0.0, 1.0
        scale = 1.0 / max(std, 1e-8)
        image[c][brain_crop] = ((values - mean) * scale).astype(np.float32)
        stats.append({"mean": mean, "std": std})
    return image, brain_crop, {"start_zyx": start, "end_zyx": end}, brain.shape, stats


# ---------------------------------------------------------------------------------------------
# blobs

def find_blobs(mean_ijk: np.ndarray, threshold: float, connectivity: int, min_voxels: int):
    """Labels on the input grid (ids ordered as the pipeline orders them) and per-blob facts."""
    structure = ndimage.generate_binary_structure(3, {6: 1, 18: 2, 26: 3}[connectivity])
    labels, n = ndimage.label(mean_ijk > threshold, structure=structure)
    if n == 0:
        return labels.astype(np.int32), []
    flat = labels.ravel(order="F")  # input raster order: i fastest, then j, then k
    values = mean_ijk.ravel(order="F").astype(np.float64)
    counts = np.bincount(flat, minlength=n + 1)
    sums = np.bincount(flat, weights=values, minlength=n + 1)
    ids, first = np.unique(flat, return_index=True)
    first_key = np.full(n + 1, np.iinfo(np.int64).max)
    first_key[ids] = first
    keep = [l for l in range(1, n + 1) if counts[l] >= min_voxels]
    order = sorted(keep, key=lambda l: (-counts[l], -(sums[l] / counts[l]), first_key[l]))
    mapping = np.zeros(n + 1, dtype=np.int32)
    for new, old in enumerate(order, start=1):
        mapping[old] = new
    labels = mapping[labels]
    maxima = ndimage.maximum(mean_ijk, labels, index=np.arange(1, len(order) + 1))
    centroids = ndimage.center_of_mass(np.ones_like(mean_ijk), labels, np.arange(1, len(order) + 1))
    blobs = [{"id": new, "voxels": int(counts[old]), "mean_logit": float(sums[old] / counts[old]),
              "max_logit": float(maxima[new - 1]),
              "centroid_voxel": [float(v) for v in centroids[new - 1]]}
             for new, old in enumerate(order, start=1)]
    return labels, blobs


def write_map(path: Path, data: np.ndarray, like: nib.Nifti1Image, dtype, description: str):
    header = like.header.copy()
    header.set_data_dtype(dtype)
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), like.affine, header=header)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["descrip"] = description.encode()[:79]
    nib.save(img, str(path))


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", required=True, type=Path, help="BraTS-named case folder")
    p.add_argument("--models", required=True, nargs="+", type=Path)
    p.add_argument("--passes", type=int, default=10, help="passes per model")
    p.add_argument("--sigma", type=float, default=0.2, help="noise std (z-score units); 0 = none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--weighting", choices=["gaussian", "constant"], default="gaussian")
    p.add_argument("--noise-region", choices=["volume", "brain"], default="volume")
    p.add_argument("--no-crop", action="store_true",
                   help="slide the windows over the whole grid, not the brain's bounding box")
    p.add_argument("--threshold", type=float, default=0.0)
    p.add_argument("--connectivity", type=int, choices=[6, 18, 26], default=26)
    p.add_argument("--min-voxels", type=int, default=1)
    p.add_argument("--channels", nargs=4, default=list(CHANNELS))
    p.add_argument("--orientation", default="LPS")
    p.add_argument("--spinning", choices=["on", "off"], default="on",
                   help="ONNX Runtime intra-op thread spinning (its default is on)")
    p.add_argument("--cpu-arena", choices=["on", "off"], default="on",
                   help="ONNX Runtime's CPU memory arena (its default is on)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("-q", "--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    t_start = time.perf_counter()
    timings = {}
    log = (lambda *m: None) if a.quiet else (lambda *m: print("reference:", *m, file=sys.stderr))

    t = time.perf_counter()
    like, paths, channels_ijk = load_case(a.case, a.channels)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    xform, back = orientation_transforms(like.affine, a.orientation)
    image, brain, crop, canon_shape, channel_stats = preprocess(channels_ijk, xform,
                                                                not a.no_crop)
    del channels_ijk
    timings["preprocess"] = time.perf_counter() - t
    log(f"crop {crop} of {canon_shape}, brain voxels {int(brain.sum())}")

    t = time.perf_counter()
    models = [Model(p, a.threads, a.spinning == "on", a.cpu_arena == "on") for p in a.models]
    timings["load_models"] = time.perf_counter() - t

    t = time.perf_counter()
    rng = np.random.default_rng(a.seed)
    sigma = np.float32(a.sigma)
    shape = image.shape[1:]
    total = np.zeros(shape, dtype=np.float64)
    total_sq = np.zeros(shape, dtype=np.float64)
    noise_var = np.zeros(shape, dtype=np.float64) if a.passes > 1 else None
    timers = {"noise": 0.0, "stitch": 0.0, "aggregate": 0.0}
    weight_cache: dict = {}
    per_model = []
    for m, model in enumerate(models):
        m_sum = np.zeros(shape, dtype=np.float64)
        m_sq = np.zeros(shape, dtype=np.float64)
        ort_before = model.run_seconds
        for p in range(a.passes):
            t0 = time.perf_counter()
            if a.sigma > 0:
                noise = rng.standard_normal(image.shape, dtype=np.float32)
                if a.noise_region == "brain":
                    noise *= brain[None]
                source = image + sigma * noise
                del noise
            else:
                source = image
            timers["noise"] += time.perf_counter() - t0
            logits = sliding_window(model, source, a.overlap, a.weighting, a.batch_size,
                                    weight_cache, timers)
            del source
            t0 = time.perf_counter()
            l64 = logits.astype(np.float64)
            m_sum += l64
            m_sq += l64 * l64
            del l64, logits
            timers["aggregate"] += time.perf_counter() - t0
            log(f"model {model.name} pass {p + 1}/{a.passes} "
                f"({time.perf_counter() - t:.1f} s)")
        t0 = time.perf_counter()
        total += m_sum
        total_sq += m_sq
        if noise_var is not None:
            k = a.passes
            noise_var += np.maximum(m_sq - m_sum * m_sum / k, 0.0) / (k - 1) / k
        del m_sum, m_sq
        timers["aggregate"] += time.perf_counter() - t0
        windows = window_count(shape, model.patch, a.overlap)
        per_model.append({"name": model.name, "path": str(model.path), "sha256": model.sha256,
                          "patch_size": list(model.patch),
                          "batch_size": model.fixed_batch or a.batch_size,
                          "windows_per_pass": windows,
                          "calls_per_pass": model.calls // max(a.passes, 1),
                          "onnxruntime_s": model.run_seconds - ort_before})
    n = a.passes * len(models)
    t0 = time.perf_counter()
    mean = total / n
    if n > 1:
        std = np.sqrt(np.maximum(total_sq - n * mean * mean, 0.0) / (n - 1))
    else:
        std = np.zeros(shape)
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
    se32 = (np.sqrt(noise_var) / len(models)).astype(np.float32) if noise_var is not None else None
    del total, total_sq, mean, std, noise_var
    timers["aggregate"] += time.perf_counter() - t0
    timings["ensemble"] = time.perf_counter() - t
    onnx_s = sum(m.run_seconds for m in models)

    t = time.perf_counter()

    def full(v: np.ndarray, fill: float) -> np.ndarray:
        canvas = np.full(canon_shape, fill, dtype=v.dtype)
        canvas[tuple(slice(s, e) for s, e in zip(crop["start_zyx"], crop["end_zyx"]))] = v
        return to_input_ijk(canvas, back)

    mean_ijk = full(mean32, OUTSIDE_LOGIT)
    labels, blobs = find_blobs(mean_ijk, a.threshold, a.connectivity, a.min_voxels)
    timings["blobs"] = time.perf_counter() - t

    t = time.perf_counter()
    staging = a.out
    staging.mkdir(parents=True, exist_ok=True)
    write_map(staging / "mean_logits.nii.gz", mean_ijk, like, np.float32, "reference mean logit")
    write_map(staging / "std_logits.nii.gz", full(std32, 0.0), like, np.float32, "reference logit std")
    write_map(staging / "labels.nii.gz", labels, like, np.int32, "reference blob ids")
    if se32 is not None:
        write_map(staging / "noise_se_logits.nii.gz", full(se32, 0.0), like, np.float32,
                  "reference se of mean logit (noise)")
    timings["write_maps"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start

    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary = {
        "implementation": "numpy + onnxruntime (Python API, CPUExecutionProvider)",
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__,
                     "onnxruntime": ort.__version__, "nibabel": nib.__version__},
        "case": {"dir": str(a.case), "inputs": [str(p) for p in paths],
                 "shape_ijk": list(like.shape[:3]),
                 "axis_codes": list(nib.aff2axcodes(like.affine))},
        "preprocess": {"crop_to_nonzero": not a.no_crop,
                       "crop_canonical_zyx": crop, "canonical_shape_zyx": list(canon_shape),
                       "brain_voxels": int(brain.sum()),
                       "channel_stats": dict(zip(a.channels, channel_stats))},
        "ensemble": {"passes_per_model": a.passes, "total_passes": n, "sigma": a.sigma,
                     "seed": a.seed, "noise_region": a.noise_region, "overlap": a.overlap,
                     "weighting": a.weighting, "batch_size": a.batch_size,
                     "rng": "numpy PCG64 (default_rng(seed)), standard_normal float32"},
        "runtime": {"threads": a.threads, "spinning": a.spinning, "cpu_arena": a.cpu_arena,
                    "providers": models[0].session.get_providers() if models else []},
        "models": per_model,
        "blobs": blobs,
        "timings_s": {**timings, "onnxruntime": onnx_s,
                      "ensemble_noise": timers["noise"], "ensemble_stitch": timers["stitch"],
                      "ensemble_aggregate": timers["aggregate"]},
        "peak_rss_mib": usage.ru_maxrss / 1024.0,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }
    (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log(f"{len(blobs)} blobs, total {timings['total']:.1f} s, inside ONNX Runtime {onnx_s:.1f} s, "
        f"peak RSS {summary['peak_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
