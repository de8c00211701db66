#!/usr/bin/env python3
"""Write the seed corpus of the fuzz targets into fuzz/corpus/<target>/ (small files, committed).

    .venv/bin/python fuzz/make_seeds.py

nifti/            tiny NIfTI-1 volumes written by nibabel: each datatype the reader takes, .nii
                  and .nii.gz, sform or qform only or neither, big-endian, a 4-D file with one
                  volume, a file with an extension, and a scaled one.
dicom_series/     small MR series written by tests/fixtures/dicom/make_series.py from a 6x5x8
                  case of 8 slices (t1n only), one seed per variant (good and bad), the files of a series
                  concatenated with SEPARATOR between them (what fuzz_targets/dicom_series.rs
                  splits).
pipeline_config/  the pipelines in pipelines/ and a few small configs touching every section.

Every seed is written deterministically (same bytes on every run).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import shutil
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = HERE / "corpus"
SEPARATOR = b"\n--stochseg-fuzz-next-file--\n"
CHANNELS = ("t1n", "t1c", "t2w", "t2f")


def affine(spacing=(1.0, 1.0, 2.0)) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = [-2.0, 3.0, 10.0]
    return a


def nifti_bytes(img, gz: bool) -> bytes:
    # nibabel writes through a file map; a BytesIO keeps it in memory
    buf = io.BytesIO()
    img.to_file_map({"image": nib.FileHolder(fileobj=buf), "header": nib.FileHolder(fileobj=buf)})
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def nifti_seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, size=(4, 3, 2))
    seeds = {}
    for dtype in (np.uint8, np.int8, np.int16, np.uint16, np.int32, np.float32, np.float64):
        img = nib.Nifti1Image(base.astype(dtype), affine())
        img.set_sform(affine(), 1)
        img.set_qform(affine(), 1)
        name = np.dtype(dtype).name
        seeds[f"{name}.nii"] = nifti_bytes(img, gz=False)
    seeds["int16.nii.gz"] = nifti_bytes(nib.Nifti1Image(base.astype(np.int16), affine()), True)
    q = nib.Nifti1Image(base.astype(np.float32), affine((0.9, 1.1, 3.0)))
    q.set_sform(None, 0)
    q.set_qform(affine((0.9, 1.1, 3.0)), 1)
    seeds["qform-only.nii"] = nifti_bytes(q, False)
    n = nib.Nifti1Image(base.astype(np.int16), affine())
    n.set_sform(None, 0)
    n.set_qform(None, 0)
    seeds["no-forms.nii"] = nifti_bytes(n, False)
    big = nib.Nifti1Image(base.astype(">i2"), affine(), nib.Nifti1Header(endianness=">"))
    seeds["big-endian.nii"] = nifti_bytes(big, False)
    seeds["4d-one-volume.nii"] = nifti_bytes(
        nib.Nifti1Image(base[..., None].astype(np.int16), affine()), False)
    e = nib.Nifti1Image(base.astype(np.int16), affine())
    e.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment for the fuzzer"))
    seeds["extension.nii"] = nifti_bytes(e, False)
    s = nib.Nifti1Image(base.astype(np.int16), affine())
    s.header.set_slope_inter(0.5, -3.0)
    seeds["scaled.nii"] = nifti_bytes(s, False)
    return seeds


def make_series_module():
    path = ROOT / "tests" / "fixtures" / "dicom" / "make_series.py"
    spec = importlib.util.spec_from_file_location("make_series", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_series"] = module
    spec.loader.exec_module(module)
    return module


def dicom_seeds() -> dict[str, bytes]:
    ms = make_series_module()
    # variants whose damage fits an 8-slice series (the others touch slices 10 to 30)
    variants = ["plain", "nonmonotonic", "oblique", "flip-rows", "implicit", "deflated", "rle",
                "bad-mixed-orientation", "bad-mixed-size", "bad-no-pixel-data", "bad-jpeg-ls",
                "bad-non-image", "bad-enhanced"]
    rng = np.random.default_rng(1)
    seeds = {}
    with tempfile.TemporaryDirectory() as tmp:
        case = Path(tmp) / "case"
        case.mkdir()
        for c in CHANNELS:
            data = rng.integers(0, 300, size=(6, 5, 8)).astype(np.int16)
            nib.save(nib.Nifti1Image(data, affine()), case / f"TINY-{c}.nii.gz")
        for v in variants:
            out = Path(tmp) / v
            meta = ms.make_case(case, out, v, "per-channel", ("t1n",))
            folder = Path(meta["channels"]["t1n"]["folder"])
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            seeds[v] = SEPARATOR.join(p.read_bytes() for p in files)
            if v == "plain":
                # the same damage as make_series.py's bad-missing-slice and
                # bad-duplicate-position, on this short series
                data = [p.read_bytes() for p in files]
                seeds["bad-missing-slice"] = SEPARATOR.join(data[:4] + data[5:])
                seeds["bad-duplicate-position"] = SEPARATOR.join(data + [data[2]])
    return seeds


def config_seeds() -> dict[str, bytes]:
    seeds = {p.name: p.read_bytes() for p in sorted((ROOT / "pipelines").glob("*.yaml"))}
    seeds["minimal.yaml"] = b"models: [{path: m.onnx}]\n"
    seeds["every-section.yaml"] = b"""name: fuzz
channels: [t1n, t1c, t2w, t2f]
orientation: RAS
models:
  - {path: a.onnx, name: a, patch_size: [16, 32, 32], output_channel: 0}
preprocess: {normalization: zscore_nonzero, crop_to_nonzero: true, crop_margin_voxels: 2}
inference: {overlap: 0.5, weighting: gaussian, batch_size: 2, outside_logit: -10}
ensemble: {mode: stochastic, passes: 3, sigma: 0.1, noise_region: brain, seed: 7,
           aggregation: mean_probability}
blobs: {threshold: 0.5, connectivity: 18, min_voxels: 3}
outputs: {maps: [mean_logits, labels], histogram_bins: 32}
execution: {providers: [cuda:0, cpu], allow_fallback: true, threads: 2}
limits: {max_voxels: 1000000, max_memory_mib: 4096}
dicom:
  series:
    t1n: {series_description: "(?i)t1.*pre", exclude_description: "(?i)post"}
    t1c: {series_number: "^7$"}
dicom_output: {per_blob_segments: true, probability_seg: true, patient_id: SUBJ-01}
"""
    seeds["anchors.yaml"] = b"""defaults: &d {passes: 2, sigma: 0.3}
models: [{path: m.onnx}]
ensemble: *d
"""
    return seeds


def write(target: str, seeds: dict[str, bytes]) -> None:
    folder = CORPUS / target
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    total = sum(len(d) for d in seeds.values())
    print(f"{folder.relative_to(ROOT)}: {len(seeds)} seeds, {total} bytes")


def main() -> int:
    write("nifti", nifti_seeds())
    write("dicom_series", dicom_seeds())
    write("pipeline_config", config_seeds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
