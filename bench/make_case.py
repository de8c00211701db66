#!/usr/bin/env python3
"""Cases for the benchmark's scaling series, cut from a full-size BraTS-named case.

A case of shape (X, Y, Z) is a box of the source case (by default the demo phantom,
demo/BraTS-DEMO-00000-000, 240 x 240 x 155), centred on the centroid of its largest tumour
(the `-seg` file; the brain's bounding box when there is none) and clamped to the grid; along an
axis where the source is shorter than the box, the box is zero-padded (half before, half after).
The affine is the source's, moved so every voxel keeps its world position; dtype, sform/qform
codes and scl_slope/scl_inter are kept. So a cut case is real-looking 1 mm data with tumour in it,
its brain mask fills (most of) the box, and the scaling series scales the region the models run on.

When the source folder does not exist it is made first with scripts/phantom.py, with the demo
case's arguments (seed 42, 2 tumours, 2 mimics).

    python bench/make_case.py --out out/bench/cases --shape 64 64 64 --shape 128 128 128

prints one line per case: its folder. Existing cases with a matching `bench-case.json` are reused.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "BraTS-DEMO-00000-000"
MODALITIES = ("t1n", "t1c", "t2w", "t2f")
SUFFIXES = MODALITIES + ("seg",)


def ensure_source(source: Path) -> Path:
    """The source case folder; the demo phantom is regenerated when missing."""
    if source.is_dir() and any(source.glob("*-t1n.nii*")):
        return source
    if source.resolve() != DEMO.resolve():
        raise SystemExit(f"make_case: {source}: no case folder")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "phantom.py"), "--out", str(source),
                    "--case-id", source.name, "--shape", "240", "240", "155",
                    "--spacing", "1", "1", "1", "--seed", "42", "--tumors", "2",
                    "--exact-tumors", "--false-positive-mimics", "2"], check=True)
    return source


def channel_file(case: Path, suffix: str) -> Path | None:
    hits = sorted(p for p in case.iterdir()
                  if p.name.endswith(f"-{suffix}.nii.gz") or p.name.endswith(f"-{suffix}.nii"))
    return hits[0] if hits else None


def box_start(source: Path, shape_src, shape) -> list[int]:
    """Start (negative = zero padding) of the box along i, j, k: centred on the largest tumour,
    kept inside the brain's bounding box where it fits (so the brain fills it), else centred on
    that bounding box, and always inside the grid unless the grid is shorter than the box."""
    brain = np.asarray(nib.load(str(channel_file(source, "t1n"))).dataobj) != 0
    idx = np.argwhere(brain)
    lo, hi = (idx.min(0), idx.max(0) + 1) if len(idx) else (np.zeros(3, int), np.array(shape_src))
    centre = (lo + hi) / 2.0
    seg_path = channel_file(source, "seg")
    if seg_path is not None:
        seg = np.asarray(nib.load(str(seg_path)).dataobj) > 0
        labels, n = ndimage.label(seg, np.ones((3, 3, 3), bool))
        if n:
            largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
            centre = np.array(ndimage.center_of_mass(labels == largest))
    start = []
    for a, (n_src, n) in enumerate(zip(shape_src, shape)):
        if n >= n_src:
            start.append(-((n - n_src) // 2))
        elif n <= hi[a] - lo[a]:
            start.append(int(min(max(round(centre[a] - n / 2.0), lo[a]), hi[a] - n)))
        else:
            mid = (lo[a] + hi[a]) / 2.0
            start.append(int(min(max(round(mid - n / 2.0), 0), n_src - n)))
    return start


def save(path: Path, data: np.ndarray, affine: np.ndarray, like) -> None:
    """Like the source: dtype, sform/qform codes, and the source's scl_slope/scl_inter written
    explicitly (nibabel would leave them NaN; BraTS files carry 1 and 0). `data` is unscaled."""
    header = like.header.copy()
    img = nib.Nifti1Image(data, affine, header=header)
    img.set_sform(affine, code=int(like.header["sform_code"]) or 1)
    img.set_qform(affine, code=int(like.header["qform_code"]) or 1)
    slope, inter = float(like.dataobj.slope), float(like.dataobj.inter)
    raw = bytearray(img.to_bytes())
    endian = "<" if img.header.endianness == "<" else ">"
    raw[112:120] = struct.pack(endian + "ff", slope, inter)
    with open(path, "wb") as f:
        f.write(gzip.compress(bytes(raw), compresslevel=6, mtime=0))


def cut(data: np.ndarray, start, shape) -> np.ndarray:
    out = np.zeros(tuple(shape), dtype=data.dtype)
    src, dst = [], []
    for s, n, n_src in zip(start, shape, data.shape):
        lo, hi = max(s, 0), min(s + n, n_src)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = data[tuple(src)]
    return out


def make_case(source: Path, out_root: Path, shape, force: bool = False) -> Path:
    source = ensure_source(source)
    name = "BENCH-" + "x".join(f"{n:03d}" for n in shape)
    case = out_root / name
    meta = {"source": str(source.resolve()), "shape_ijk": list(shape)}
    marker = case / "bench-case.json"
    if not force and marker.exists():
        try:
            if {k: v for k, v in json.loads(marker.read_text()).items() if k in meta} == meta:
                return case
        except (OSError, ValueError):
            pass
    first = nib.load(str(channel_file(source, "t1n")))
    start = box_start(source, first.shape[:3], shape)
    case.mkdir(parents=True, exist_ok=True)
    for suffix in SUFFIXES:
        path = channel_file(source, suffix)
        if path is None:
            continue
        img = nib.load(str(path))
        raw = np.asarray(img.dataobj.get_unscaled())
        shift = np.eye(4)
        shift[:3, 3] = start
        save(case / f"{name}-{suffix}.nii.gz", cut(raw, start, shape), img.affine @ shift, img)
    marker.write_text(json.dumps({**meta, "start_ijk": start}, indent=2) + "\n")
    return case


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", type=Path, default=DEMO, help="full-size BraTS-named case folder")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "cases")
    p.add_argument("--shape", type=int, nargs=3, action="append", metavar=("X", "Y", "Z"),
                   help="case shape (i, j, k); repeatable (default: 64^3 and 128^3)")
    p.add_argument("--force", action="store_true", help="rewrite existing cases")
    a = p.parse_args(argv)
    for shape in a.shape or [(64, 64, 64), (128, 128, 128)]:
        print(make_case(a.source, a.out, shape, a.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
