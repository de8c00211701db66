#!/usr/bin/env python3
"""Synthetic multi-modal brain-MRI phantoms with BraTS-style file naming.

Writes, for a case NAME:
    DIR/NAME-t1n.nii.gz  DIR/NAME-t1c.nii.gz  DIR/NAME-t2w.nii.gz  DIR/NAME-t2f.nii.gz
        int16, scl_slope = 1, scl_inter = 0, zero outside the (skull-stripped) brain
    DIR/NAME-seg.nii.gz
        uint8 BraTS-2024 labels: 0 background, 1 NETC (necrotic core),
        2 SNFH (edema), 3 ET (enhancing tumour)

Array axes are (x, y, z) = NIfTI (i, j, k).  Orientation is LPS like BraTS
(nibabel axis codes ('L', 'P', 'S')): affine = diag(-sx, -sy, sz) with an origin
that centres the volume on (0, 0, 0).  sform and qform are both set (code 1).

The output is a deterministic function of the arguments (numpy PCG64 seeded with
--seed); the .nii.gz files are written with a fixed gzip header (mtime 0), so a
rerun gives byte-identical files.

This is a demonstration phantom: it only has to look plausible enough for a small
model to learn "tumour vs. not tumour" and to produce some low-confidence false
positives on the "mimics" (bright spots that are not tumour).
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np
from scipy import ndimage

MODALITIES = ("t1n", "t1c", "t2w", "t2f")

# tissue codes used internally
BG, CSF, GM, WM, DGM, NETC, SNFH, ET = range(8)

# mean intensity per modality and tissue code (BG, CSF, GM, WM, DGM, NETC, SNFH, ET)
# rough MRI contrasts: t1n tumour slightly dark, t1c enhancing rim bright,
# t2w oedema/core/CSF bright, t2f (FLAIR) oedema bright and CSF dark.
INTENSITY = {
    "t1n": (0.0, 420.0, 640.0, 860.0, 700.0, 430.0, 600.0, 620.0),
    "t1c": (0.0, 450.0, 680.0, 900.0, 740.0, 440.0, 640.0, 1500.0),
    "t2w": (0.0, 1800.0, 900.0, 620.0, 800.0, 1650.0, 1350.0, 1100.0),
    "t2f": (0.0, 230.0, 470.0, 360.0, 430.0, 420.0, 780.0, 600.0),
}
# relative (multiplicative) noise level per modality, as a fraction of WM intensity
NOISE = {"t1n": 0.020, "t1c": 0.022, "t2w": 0.025, "t2f": 0.030}


def lowfreq(rng: np.random.Generator, shape, cells, order=1) -> np.ndarray:
    """Smooth random field with roughly `cells` random values per axis,
    interpolated to `shape`; zero mean, approx. unit std, float32."""
    coarse_shape = tuple(max(2, int(c)) for c in np.broadcast_to(cells, (len(shape),)))
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    zoom = [s / c for s, c in zip(shape, coarse_shape)]
    out = ndimage.zoom(coarse, zoom, order=order, mode="nearest", grid_mode=True)
    # zoom may be off by one voxel on some axes: fix up
    sl = tuple(slice(0, s) for s in shape)
    out = out[sl]
    if out.shape != tuple(shape):
        pad = [(0, s - o) for s, o in zip(shape, out.shape)]
        out = np.pad(out, pad, mode="edge")
    return out


def affine_for(shape, spacing) -> np.ndarray:
    sx, sy, sz = spacing
    nx, ny, nz = shape
    aff = np.zeros((4, 4))
    aff[0, 0] = -sx
    aff[1, 1] = -sy
    aff[2, 2] = sz
    # centre of the volume at world (0, 0, 0)
    aff[0, 3] = sx * (nx - 1) / 2.0
    aff[1, 3] = sy * (ny - 1) / 2.0
    aff[2, 3] = -sz * (nz - 1) / 2.0
    aff[3, 3] = 1.0
    return aff


def save_nifti(path: str, data: np.ndarray, affine: np.ndarray, dtype) -> None:
    """Save with sform/qform code 1, scl_slope=1, scl_inter=0 and a
    deterministic gzip stream."""
    import nibabel as nib

    arr = np.asarray(data).astype(dtype)
    img = nib.Nifti1Image(arr, affine)
    hdr = img.header
    hdr.set_data_dtype(dtype)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    raw = bytearray(img.to_bytes())
    # nibabel leaves scl_slope/scl_inter at NaN ("no scaling"); BraTS files carry
    # an explicit 1/0.  Patch the two float32 fields (offsets 112 and 116).
    endian = "<" if hdr.endianness == "<" else ">"
    raw[112:120] = struct.pack(endian + "ff", 1.0, 0.0)
    with open(path, "wb") as f:
        f.write(gzip.compress(bytes(raw), compresslevel=6, mtime=0))


def _ellipsoid_radius(coords, centre, semi):
    """r = sqrt(sum(((c - centre)/semi)^2)) on broadcast 1-D coordinate arrays."""
    x, y, z = coords
    return np.sqrt(((x - centre[0]) / semi[0]) ** 2
                   + ((y - centre[1]) / semi[1]) ** 2
                   + ((z - centre[2]) / semi[2]) ** 2).astype(np.float32)


def make_phantom(shape, spacing=(1.0, 1.0, 1.0), seed=0, tumors=2, mimics=1,
                 n_tumors_exact=False, hard_mimics=0):
    """Return (images: dict modality -> int16 array (x,y,z), seg: uint8 array, affine).

    `tumors` is the maximum number of tumours; the actual number is drawn
    from 1..tumors unless n_tumors_exact is True.  `mimics` is the exact number
    of false-positive mimics."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    nx, ny, nz = shape
    ext = np.array(shape, dtype=np.float64) * np.array(spacing)  # mm extents

    # 1-D physical coordinates (mm) relative to the volume centre, broadcastable
    cx = ((np.arange(nx) - (nx - 1) / 2.0) * spacing[0]).astype(np.float32)[:, None, None]
    cy = ((np.arange(ny) - (ny - 1) / 2.0) * spacing[1]).astype(np.float32)[None, :, None]
    cz = ((np.arange(nz) - (nz - 1) / 2.0) * spacing[2]).astype(np.float32)[None, None, :]
    coords = (cx, cy, cz)

    # ---- brain envelope: a bumpy ellipsoid -------------------------------
    semi = ext * np.array([0.36, 0.42, 0.40]) * rng.uniform(0.92, 1.04, 3)
    centre = ext * rng.uniform(-0.03, 0.03, 3)
    r = _ellipsoid_radius(coords, centre, semi)
    bump = lowfreq(rng, shape, (5, 5, 4), order=1)
    rb = r * (1.0 + 0.045 * bump)
    brain = rb < 1.0

    # ---- cortex / white matter / deep grey / CSF -------------------------
    tissue = np.zeros(shape, dtype=np.uint8)
    tissue[brain] = WM
    gyri = lowfreq(rng, shape, np.maximum(4, (ext / 9.0).astype(int)), order=1)
    cortex_in = 0.80 + 0.05 * gyri
    cortex = brain & (rb > cortex_in)
    tissue[cortex] = GM
    # sulci: CSF clefts where the gyral field crosses zero, plus a thin outer rim
    sulci = cortex & ((np.abs(gyri) < 0.16) & (rb > cortex_in + 0.04) | (rb > 0.975))
    tissue[sulci] = CSF
    del gyri, cortex, sulci, cortex_in

    # deep grey nuclei: two blobs either side of the midline
    for side in (-1.0, 1.0):
        c = centre + semi * np.array([0.28 * side, -0.05, -0.05])
        s = semi * np.array([0.12, 0.16, 0.14])
        rd = _ellipsoid_radius(coords, c, s)
        tissue[(rd < 1.0) & brain] = DGM
    # lateral ventricles: two elongated ellipsoids, plus a midline third ventricle
    vent_scale = rng.uniform(0.8, 1.25)
    for side in (-1.0, 1.0):
        c = centre + semi * np.array([0.11 * side, -0.05, 0.12])
        s = semi * np.array([0.06, 0.36, 0.09]) * vent_scale
        rv = _ellipsoid_radius(coords, c, s)
        tissue[(rv < 1.0) & brain] = CSF
    rv = _ellipsoid_radius(coords, centre + semi * np.array([0.0, 0.0, -0.1]),
                           semi * np.array([0.02, 0.12, 0.10]))
    tissue[(rv < 1.0) & brain] = CSF
    del r, rv, rd, bump

    # ---- tumours ------------------------------------------------------------
    seg = np.zeros(shape, dtype=np.uint8)
    n_t = tumors if n_tumors_exact else int(rng.integers(1, tumors + 1)) if tumors > 0 else 0
    placed = []  # (centre_mm, radius_mm)
    scale = float(np.min(semi))
    spacing_a = np.array(spacing)
    for _ in range(n_t):
        r_ed = scale * rng.uniform(0.24, 0.40)      # oedema outer radius (mm)
        for _try in range(50):
            # direction inside the brain, radius fraction so the core stays inside
            v = rng.standard_normal(3)
            v /= np.linalg.norm(v)
            frac = rng.uniform(0.05, 0.62)
            c = centre + v * semi * frac
            if all(np.linalg.norm(c - pc) > 1.3 * (r_ed + pr) for pc, pr in placed):
                break
        placed.append((c, r_ed))
        _paint_tumor(rng, seg, coords, c, r_ed, spacing_a, shape)
    seg[~brain] = 0
    # the tumour replaces normal tissue
    tissue[seg == 2] = SNFH
    tissue[seg == 3] = ET
    tissue[seg == 1] = NETC

    # ---- images -------------------------------------------------------------
    images = {}
    fine = lowfreq(rng, shape, np.maximum(6, (ext / 3.0).astype(int)), order=1)
    pv_sigma = [0.6 / s for s in spacing]  # ~0.6 mm partial-volume blur
    mimic_specs = _mimic_specs(rng, mimics, centre, semi, placed)
    if hard_mimics:
        # tumour-like spots (bright on t1c, t2w and t2f, no oedema), drawn from their own
        # stream so that hard_mimics=0 leaves every other voxel of a phantom unchanged
        hrng = np.random.default_rng([seed, 1])
        hard = _mimic_specs(hrng, hard_mimics, centre, semi, placed + [
            (sp["c"], sp["r"] + sp["len"]) for sp in mimic_specs])
        for sp in hard:
            sp["kind"] = "tumour_like"
        mimic_specs += hard
    for mod in MODALITIES:
        lut = np.asarray(INTENSITY[mod], dtype=np.float32)
        img = lut[tissue]
        # mild tissue texture
        img *= 1.0 + 0.03 * fine
        for spec in mimic_specs:
            _paint_mimic(img, spec, mod, coords, shape, spacing_a)
        img = ndimage.gaussian_filter(img, pv_sigma, truncate=3.0)
        bias = np.exp(0.08 * lowfreq(rng, shape, (3, 3, 3), order=1))
        img *= bias
        sd = NOISE[mod] * INTENSITY[mod][WM] * rng.uniform(0.8, 1.2)
        n1 = rng.standard_normal(shape, dtype=np.float32)
        img += sd * n1
        img = np.abs(img)
        img[~brain] = 0.0
        img[brain] = np.maximum(img[brain], 1.0)  # every brain voxel non-zero
        images[mod] = np.rint(np.minimum(img, 32767.0)).astype(np.int16)
    return images, seg, affine_for(shape, spacing)


def _box(center_mm, radius_mm, spacing, shape):
    """Index slices of a box around a physical point (mm relative to volume centre)."""
    sl = []
    for a in range(3):
        c_idx = center_mm[a] / spacing[a] + (shape[a] - 1) / 2.0
        h = radius_mm / spacing[a] + 2
        lo = int(max(0, np.floor(c_idx - h)))
        hi = int(min(shape[a], np.ceil(c_idx + h) + 1))
        sl.append(slice(lo, max(lo, hi)))
    return tuple(sl)


def _paint_tumor(rng, seg, coords, c, r_ed, spacing, shape):
    box = _box(c, r_ed * 1.45, spacing, shape)
    if any(s.stop - s.start < 1 for s in box):
        return
    bx, by, bz = (coords[0][box[0]], coords[1][:, box[1]], coords[2][:, :, box[2]])
    stretch = rng.uniform(0.8, 1.25, 3)
    d = np.sqrt(((bx - c[0]) * stretch[0]) ** 2 + ((by - c[1]) * stretch[1]) ** 2
                + ((bz - c[2]) * stretch[2]) ** 2)
    bshape = d.shape
    cells = np.maximum(3, (np.array(bshape) * spacing / 8.0).astype(int))
    n_ed = lowfreq(rng, bshape, cells, order=1)
    n_co = lowfreq(rng, bshape, cells, order=1)
    r_core = r_ed * rng.uniform(0.45, 0.68)          # enhancing rim outer radius
    r_nec = r_core * rng.uniform(0.40, 0.72)         # necrosis radius
    # the core is offset a little from the oedema centre
    off = rng.standard_normal(3) * 0.15 * r_ed
    d_core = np.sqrt(((bx - c[0] - off[0]) * stretch[0]) ** 2
                     + ((by - c[1] - off[1]) * stretch[1]) ** 2
                     + ((bz - c[2] - off[2]) * stretch[2]) ** 2)
    ed = d * (1.0 + 0.28 * n_ed) < r_ed
    core = d_core * (1.0 + 0.18 * n_co) < r_core
    nec = d_core * (1.0 + 0.22 * n_ed) < r_nec
    # keep one connected lesion: drop noise-made fragments away from the main mass
    lesion = ed | core
    lab, n = ndimage.label(lesion, np.ones((3, 3, 3), bool))
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        lesion = lab == int(np.argmax(sizes))
        ed &= lesion
        core &= lesion
    sub = seg[box]
    sub[ed & (sub == 0)] = 2
    sub[core] = 3
    sub[nec & core] = 1


def _mimic_specs(rng, m, centre, semi, placed):
    specs = []
    kinds = ["t1c_vessel", "t2f_blob", "t1c_blob", "t2_blob"]
    for i in range(m):
        kind = kinds[int(rng.integers(0, len(kinds)))] if i >= 2 else kinds[i]
        for _try in range(50):
            v = rng.standard_normal(3)
            v /= np.linalg.norm(v)
            c = centre + v * semi * rng.uniform(0.1, 0.7)
            if all(np.linalg.norm(c - pc) > pr * 1.5 + 6 for pc, pr in placed):
                break
        radius = float(rng.uniform(2.0, 4.5))
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        specs.append({"kind": kind, "c": c, "r": radius, "dir": direction,
                      "len": float(rng.uniform(8, 18))})
    return specs


def _paint_mimic(img, spec, mod, coords, shape, spacing):
    kind, c, r = spec["kind"], spec["c"], spec["r"]
    reach = r + (spec["len"] if kind == "t1c_vessel" else 0.0)
    box = _box(c, reach, spacing, shape)
    bx, by, bz = (coords[0][box[0]], coords[1][:, box[1]], coords[2][:, :, box[2]])
    dx, dy, dz = bx - c[0], by - c[1], bz - c[2]
    if kind == "t1c_vessel":
        # tube along `dir`: distance to the line segment
        u = spec["dir"]
        t = np.clip(dx * u[0] + dy * u[1] + dz * u[2], -spec["len"], spec["len"])
        dist = np.sqrt((dx - t * u[0]) ** 2 + (dy - t * u[1]) ** 2 + (dz - t * u[2]) ** 2)
        prof = np.exp(-0.5 * (dist / (0.45 * r)) ** 2)
        gain = {"t1c": 700.0, "t2w": -150.0}.get(mod, 0.0)
    else:
        dist = np.sqrt(dx ** 2 + dy ** 2 + dz ** 2)
        prof = np.exp(-0.5 * (dist / (0.6 * r)) ** 2)
        gain = {
            "t2f_blob": {"t2f": 380.0},
            "t1c_blob": {"t1c": 600.0},
            "t2_blob": {"t2w": 600.0, "t2f": 200.0},
            "tumour_like": {"t1c": 360.0, "t2w": 280.0, "t2f": 200.0, "t1n": -120.0},
        }[kind].get(mod, 0.0)
    if gain != 0.0:
        img[box] += (gain * prof).astype(np.float32)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--case-id", required=True, help="case name, e.g. BraTS-DEMO-00000-000")
    p.add_argument("--shape", type=int, nargs=3, required=True, metavar=("X", "Y", "Z"))
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0),
                   metavar=("SX", "SY", "SZ"))
    p.add_argument("--tumors", type=int, default=2,
                   help="maximum number of tumours (1..K drawn from the seed)")
    p.add_argument("--exact-tumors", action="store_true",
                   help="use exactly --tumors tumours instead of 1..K")
    p.add_argument("--false-positive-mimics", type=int, default=1,
                   help="number of non-tumour bright spots (mimics)")
    p.add_argument("--hard-mimics", type=int, default=0,
                   help="number of extra tumour-like spots (bright on t1c, t2w and t2f, "
                        "no oedema, not labelled); not used for training")
    a = p.parse_args(argv)
    t0 = time.time()
    images, seg, affine = make_phantom(a.shape, a.spacing, a.seed, a.tumors,
                                       a.false_positive_mimics, a.exact_tumors, a.hard_mimics)
    os.makedirs(a.out, exist_ok=True)
    for mod in MODALITIES:
        save_nifti(os.path.join(a.out, f"{a.case_id}-{mod}.nii.gz"), images[mod], affine, np.int16)
    save_nifti(os.path.join(a.out, f"{a.case_id}-seg.nii.gz"), seg, affine, np.uint8)
    counts = np.bincount(seg.ravel(), minlength=4)
    print(f"{a.case_id}: shape {tuple(a.shape)} seed {a.seed} labels "
          f"NETC={counts[1]} SNFH={counts[2]} ET={counts[3]} "
          f"({time.time() - t0:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
