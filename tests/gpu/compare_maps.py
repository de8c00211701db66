#!/usr/bin/env python3
"""Compare the aggregated maps of two stochseg runs (numpy only, so it runs on a bare GPU node).

Usage: compare_maps.py REF_DIR OTHER_DIR TOLERANCE
Prints one line: max and mean absolute difference of mean_logits inside the brain crop, the
fraction of voxels whose sign (logit > 0) differs, blob counts, and PASS/FAIL against TOLERANCE
(max abs difference of mean logits).
"""
import gzip
import json
import struct
import sys

import numpy as np

DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 256: np.int8, 512: np.uint16}


def read_nifti(path):
    raw = gzip.open(path, "rb").read() if path.endswith(".gz") else open(path, "rb").read()
    endian = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    dim = struct.unpack(endian + "8h", raw[40:56])
    datatype = struct.unpack(endian + "h", raw[70:72])[0]
    offset = int(struct.unpack(endian + "f", raw[108:112])[0])
    shape = dim[1 : dim[0] + 1]
    data = np.frombuffer(raw, dtype=np.dtype(DTYPES[datatype]).newbyteorder(endian), offset=offset, count=int(np.prod(shape)))
    return data.reshape(shape, order="F")


def main():
    ref, other, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
    a = read_nifti(f"{ref}/mean_logits.nii.gz").astype(np.float64)
    b = read_nifti(f"{other}/mean_logits.nii.gz").astype(np.float64)
    inside = a != -10.0  # the crop box; outside it both carry the fill value
    diff = np.abs(a - b)[inside]
    flips = np.mean((a[inside] > 0) != (b[inside] > 0))
    blobs = [len(json.load(open(f"{d}/report.json"))["blobs"]) for d in (ref, other)]
    ok = diff.max() <= tol
    print(f"max|d|={diff.max():.2e} mean|d|={diff.mean():.2e} sign-flips={flips:.2e} blobs={blobs[0]}/{blobs[1]} {'PASS' if ok else 'FAIL'} (tol {tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
