"""Orientation invariance: the same case stored with other array orientations gives the same
blobs in patient coordinates, and the same maps once brought back with nibabel."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import (apply_orientation, inv_ornt_aff, io_orientation,
                                  ornt_transform)

from conftest import (CASE_ID, SPECS, case_channel_paths, model_path, run_ok,
                      write_config)


def _save(data, affine, header, path):
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine, header)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))


def make_copy(dest, kind):
    """Copy of case-small with its arrays flipped / permuted / made RAS, affine adjusted so
    every voxel keeps its patient position."""
    dest.mkdir(parents=True)
    for c, path in case_channel_paths().items():
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        a = img.affine
        if kind == "flip_i":
            f = np.eye(4)
            f[0, 0], f[0, 3] = -1, data.shape[0] - 1
            _save(data[::-1], a @ f, img.header, dest / f"{CASE_ID}-{c}.nii.gz")
        elif kind == "permute_yzx":
            # new axes (a, b, c) = old (j, k, i): old index = P @ new
            p = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)
            _save(data.transpose(1, 2, 0), a @ p, img.header, dest / f"{CASE_ID}-{c}.nii.gz")
        elif kind == "ras":
            can = nib.as_closest_canonical(img)
            _save(np.asanyarray(can.dataobj), can.affine, img.header,
                  dest / f"{CASE_ID}-{c}.nii.gz")
        else:
            raise ValueError(kind)
    chk = nib.load(str(dest / f"{CASE_ID}-t1n.nii.gz"))
    return dest, "".join(nib.aff2axcodes(chk.affine))


EXPECTED_CODES = {"flip_i": "RPS", "permute_yzx": "PSL", "ras": "RAS"}


def to_original(copy_img, copy_data, orig_img):
    """Bring an array on the copy's grid back to the original's, with nibabel."""
    t = ornt_transform(io_orientation(copy_img.affine), io_orientation(orig_img.affine))
    back = apply_orientation(copy_data, t)
    aff = copy_img.affine @ inv_ornt_aff(t, copy_data.shape)
    np.testing.assert_allclose(aff, orig_img.affine, atol=1e-5)  # the transform is right
    return back


def run_spec(tmp, spec, case):
    models, extra, args = SPECS[spec]
    cfg = write_config(tmp / "cfg.yaml", [model_path(m) for m in models], extra)
    return run_ok(tmp / "out", "--pipeline", cfg, "--case", case, *args)


def match_blobs(orig: list, copy: list) -> dict:
    """copy id -> original id; blobs matched by voxel count and patient-space centroid."""
    assert len(orig) == len(copy), f"{len(orig)} blobs vs {len(copy)} in the copy"
    mapping = {}
    free = {b["id"]: b for b in copy}
    for b in orig:
        cands = [c for c in free.values() if c["voxels"] == b["voxels"]]
        assert cands, f"no blob of {b['voxels']} voxels in the copy for blob {b['id']}"
        dist = [np.abs(np.subtract(c["centroid_mm"], b["centroid_mm"])).max() for c in cands]
        c = cands[int(np.argmin(dist))]
        assert min(dist) <= 1e-3, (b["id"], b["centroid_mm"], c["centroid_mm"])
        # the maps are equal (below), so the blob statistics are too, up to the order their
        # float64 sums run in
        for k in ("mean_logit", "max_logit", "mean_spread", "volume_mm3", "pass_agreement"):
            assert math.isclose(c[k], b[k], rel_tol=1e-12, abs_tol=1e-12), (k, b["id"], c, b)
        mapping[c["id"]] = b["id"]
        del free[c["id"]]
    return mapping


def bbox_mm(blob, affine_lps):
    corners = [np.array(affine_lps) @ np.append(blob["bbox"][k], 1.0)
               for k in ("min_voxel", "max_voxel")]
    return np.minimum(*corners)[:3], np.maximum(*corners)[:3]


def compare(orig, copy):
    ob, cb = orig.report["blobs"], copy.report["blobs"]
    assert ob, "the original run has no blobs: nothing is compared"
    mapping = match_blobs(ob, cb)
    # ids follow (voxels desc, mean logit desc): wherever that order has no tie, ids agree
    keys = [(b["voxels"], round(b["mean_logit"], 6)) for b in ob]
    for c_id, o_id in mapping.items():
        if keys.count(keys[o_id - 1]) == 1:
            assert c_id == o_id, (c_id, o_id)
    # bounding boxes are the same box in patient space
    ga = orig.report["case"]["geometry"]["affine_lps"]
    gc = copy.report["case"]["geometry"]["affine_lps"]
    for c in cb:
        o = ob[mapping[c["id"]] - 1]
        lo1, hi1 = bbox_mm(o, ga)
        lo2, hi2 = bbox_mm(c, gc)
        np.testing.assert_allclose(lo1, lo2, atol=1e-3)
        np.testing.assert_allclose(hi1, hi2, atol=1e-3)
    # maps brought back to the original grid
    oimg, cimg = orig.img("labels"), copy.img("labels")
    lab = to_original(cimg, copy.map("labels"), oimg)
    relabel = np.zeros(int(lab.max()) + 1, dtype=np.int64)
    for c_id, o_id in mapping.items():
        relabel[c_id] = o_id
    assert np.array_equal(relabel[lab], orig.map("labels")), "labels differ after reorienting"
    for name in ("mean_logits", "std_logits", "probability"):
        back = to_original(copy.img(name), copy.map(name), oimg)
        d = np.abs(back.astype(np.float64) - orig.map(name)).max()
        # an exact permutation and flip of axes, there and back: the same values
        assert d == 0, f"{name}: max |diff| {d:.3g} after reorienting back"
    # the report's geometry describes the copy's own grid
    assert copy.report["case"]["geometry"]["shape_ijk"] == list(cimg.shape)


@pytest.mark.parametrize("kind", ["flip_i", "permute_yzx", "ras"])
def test_reoriented_copy_deterministic(runs, tmp_path, kind):
    case, codes = make_copy(tmp_path / "case", kind)
    assert codes == EXPECTED_CODES[kind]
    r = run_spec(tmp_path, "det_crop_p64", case)
    assert r.report["case"]["geometry"]["axis_codes"] == codes
    compare(runs.get("det_crop_p64"), r)


def test_reoriented_copy_stochastic(runs, tmp_path):
    """Noise lives on the canonical (model) grid, so the same seed gives the same result."""
    case, codes = make_copy(tmp_path / "case", "permute_yzx")
    r = run_spec(tmp_path, "p64_s0", case)
    compare(runs.get("p64_s0"), r)
