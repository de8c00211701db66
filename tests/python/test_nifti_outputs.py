"""Every output map, read with nibabel, lies exactly on the input's grid and holds sane values."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from conftest import (CHANNELS, MAPS, UNCERTAINTY_MAPS, case_channel_paths, load_channels, lps_affine,
                      model_path, run_ok, write_config, zscore)

FLOAT_MAPS = ("mean_logits", "std_logits", "probability")


def check_grid_and_values(r, reference: nib.Nifti1Image):
    """Shape, affine, sform/qform and their codes equal the reference (first channel);
    value ranges and the probability/logit relation hold."""
    ref_h = reference.header
    files = sorted(p.name for p in r.out.iterdir())
    assert sorted(f for f in files if f.endswith((".nii", ".nii.gz"))) == \
        sorted([f"{m}.nii.gz" for m in MAPS + UNCERTAINTY_MAPS] + ["uncertainty-WT.nii.gz"])
    assert "report.json" in files and "report.yaml" in files
    # the report lists exactly what the folder holds
    assert sorted(r.report["outputs"]) == files
    for name in MAPS:
        img = r.img(name)
        h = img.header
        assert img.shape == reference.shape, (name, img.shape, reference.shape)
        assert np.array_equal(img.affine, reference.affine), (name, img.affine)
        assert np.array_equal(h.get_best_affine(), ref_h.get_best_affine()), name
        sform, scode = h.get_sform(coded=True)
        rsform, rscode = ref_h.get_sform(coded=True)
        qform, qcode = h.get_qform(coded=True)
        rqform, rqcode = ref_h.get_qform(coded=True)
        assert (int(scode or 0), int(qcode or 0)) == (int(rscode or 0), int(rqcode or 0)), name
        assert np.array_equal(h.get_sform(), ref_h.get_sform()), name
        assert np.array_equal(h.get_qform(), ref_h.get_qform()), name
        assert h.get_zooms()[:3] == ref_h.get_zooms()[:3], name
        assert h.get_xyzt_units() == ref_h.get_xyzt_units(), name
    labels_img = r.img("labels")
    assert np.issubdtype(labels_img.get_data_dtype(), np.integer), labels_img.get_data_dtype()
    labels = np.asanyarray(labels_img.dataobj)
    assert np.issubdtype(labels.dtype, np.integer), labels.dtype
    assert labels.min() >= 0 and labels.max() == len(r.report["blobs"])
    for name in FLOAT_MAPS:
        assert r.img(name).get_data_dtype() == np.float32, name
        assert np.all(np.isfinite(r.map(name))), name
    p, m, s = r.map("probability"), r.map("mean_logits"), r.map("std_logits")
    assert p.min() >= 0 and p.max() <= 1
    assert s.min() >= 0
    sig = 1 / (1 + np.exp(-m.astype(np.float64)))
    assert np.abs(p - sig).max() <= 1e-6
    # report geometry is the same grid, in LPS
    g = r.report["case"]["geometry"]
    assert g["shape_ijk"] == list(reference.shape[:3])
    np.testing.assert_allclose(g["affine_lps"], lps_affine(reference.affine), atol=1e-9)
    assert g["axis_codes"] == "".join(nib.aff2axcodes(reference.affine))
    np.testing.assert_allclose(g["spacing_mm"], reference.header.get_zooms()[:3], rtol=1e-6)


@pytest.mark.parametrize("name", ["stoch_all", "det_crop_all", "det_nocrop_p32", "p64_s0"])
def test_maps_on_input_grid(runs, reference_img, name):
    check_grid_and_values(runs.get(name), reference_img)


def test_outside_crop_box(runs, channels):
    """Outside the brain's bounding box: outside_logit, zero spread, sigmoid(outside), no id."""
    from conftest import bounding_box, brain_mask

    r = runs.get("stoch_all")
    out = np.ones(channels.shape[1:], bool)
    out[bounding_box(brain_mask(channels))] = False
    lo = np.float32(r.report["preprocess"]["outside_logit"])
    assert np.all(r.map("mean_logits")[out] == lo)
    assert np.all(r.map("std_logits")[out] == 0)
    np.testing.assert_allclose(r.map("probability")[out], 1 / (1 + np.exp(-float(lo))),
                               rtol=1e-6)
    assert np.all(r.map("labels")[out] == 0)
    # and inside the box, the stochastic spread is positive in the brain
    assert np.all(r.map("std_logits")[brain_mask(channels)] > 0)


# ------------------------------------------------------------------------------------------
# header variants: scaling, qform only, sform only (identity model: logit = z(t1n) + 1)
# ------------------------------------------------------------------------------------------
def _write_variant(d, variant):
    d.mkdir()
    for c, path in case_channel_paths().items():
        src = nib.load(str(path))
        a = src.get_fdata()
        aff = src.affine
        if variant == "scaled":
            # stored = (value + 5) / 2, scl_slope 2, scl_inter -5: values read back unchanged;
            # ignoring the scaling would make the background nonzero (brain = everything)
            img = nib.Nifti1Image(((a + 5) / 2).astype(np.float32), aff)
            img.header.set_slope_inter(2.0, -5.0)
        else:
            img = nib.Nifti1Image(a.astype(np.int16), aff)
        if variant == "qform_only":
            img.set_qform(aff, code=1)
            img.set_sform(aff, code=0)
        elif variant == "sform_only":
            img.set_sform(aff, code=2)
            img.set_qform(aff, code=0)
        else:
            img.set_sform(aff, code=1)
            img.set_qform(aff, code=1)
        nib.save(img, str(d / f"VAR-0001-{c}.nii.gz"))
    chk = nib.load(str(d / "VAR-0001-t1n.nii.gz"))
    codes = (int(chk.header["sform_code"]), int(chk.header["qform_code"]))
    assert codes == {"scaled": (1, 1), "qform_only": (0, 1), "sform_only": (2, 0)}[variant]
    if variant == "scaled":
        assert chk.dataobj.slope == 2.0 and chk.dataobj.inter == -5.0
    return d


@pytest.mark.parametrize("variant", ["scaled", "qform_only", "sform_only"])
def test_header_variants(tmp_path, variant):
    case = _write_variant(tmp_path / "case", variant)
    cfg = write_config(tmp_path / "id.yaml",
                       [{"path": str(model_path("identity-plus-one.onnx")),
                         "patch_size": [16, 32, 32]}],
                       {"ensemble": {"mode": "deterministic"},
                        "preprocess": {"crop_to_nonzero": False}})
    r = run_ok(tmp_path / "out", "--pipeline", cfg, "--case", case)
    reference = nib.load(str(case / "VAR-0001-t1n.nii.gz"))
    check_grid_and_values(r, reference)
    ch = load_channels(case, "VAR-0001")
    np.testing.assert_array_equal(ch, load_channels())  # the variant holds the same values
    expected = zscore(ch)[0] + 1
    diff = np.abs(r.map("mean_logits") - expected)
    assert diff.max() <= 1e-5, f"max |mean_logits - (z(t1n) + 1)| = {diff.max():.3g}"
    assert set(CHANNELS) == set(r.report["preprocess"]["channel_stats"])
