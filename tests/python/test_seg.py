"""DICOM SEG output (seg.dcm, prob-seg.dcm) and the source channels as DICOM MR series.

Every SEG a test here writes goes through independent readers and validators:

* dciodvfy (dicom3tools) reports no line starting with "Error" (warnings are allowed);
* dcmftest (DCMTK) says "yes";
* pydicom reads it, and its PixelData bytes equal numpy's packbits(bitorder="little") of the
  expected frames (BINARY: one contiguous bit stream, frames not padded, the total padded to an
  even length) or round(p * 255) of probability.nii.gz (FRACTIONAL);
* highdicom's segread + get_volume reconstructs, back on the input grid through the affines,
  exactly labels.nii.gz > 0 (segment 1) and labels == id (per-blob segments);
* dcmqi's segimage2itkimage converts it to NIfTI, which matches as well.

Expected frames are built here from labels.nii.gz: each frame's slice k is found from its
ImagePositionPatient through the NIfTI affine (not from DimensionIndexValues), rows are j and
columns are i. Runs are deterministic, one small model, so they take about a second each.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import (
    CASE_DIR,
    CASE_ID,
    CHANNELS,
    FIXTURES,
    case_channel_paths,
    error_line,
    load_nifti,
    lps_affine,
    model_path,
    require,
    run_ok,
    stochseg,
    write_config,
)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
MR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
MAKE_SERIES = FIXTURES / "dicom" / "make_series.py"
DCMQI = Path(shutil.which("segimage2itkimage") or
             Path(__file__).resolve().parents[2] / ".venv" / "bin" / "segimage2itkimage")
# dciodvfy warnings seen across the suite (printed by test_zz_list_dciodvfy_warnings)
WARNINGS: dict[str, set] = {}


# --------------------------------------------------------------------------------------------
# tools
# --------------------------------------------------------------------------------------------
def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install -y dicom3tools dcmtk (see .ci/run)",
                    pytrace=False)
    return path


def dciodvfy(path: Path) -> list[str]:
    """Runs dciodvfy; fails on any error line; returns the warning lines."""
    proc = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert not errors, f"dciodvfy {path}:\n" + "\n".join(lines)
    warnings = [ln for ln in lines if ln.startswith("Warning")]
    WARNINGS.setdefault(path.name if path.suffix == ".dcm" else str(path), set()).update(warnings)
    return warnings


def dcmftest(path: Path) -> None:
    proc = subprocess.run([tool("dcmftest"), str(path)], capture_output=True, text=True)
    assert proc.stdout.startswith("yes:"), f"dcmftest {path}: {proc.stdout}{proc.stderr}"


def dcentvfy(*paths: Path) -> None:
    """Patient/study/series attributes consistent across the files (no output = fine)."""
    proc = subprocess.run([tool("dcentvfy"), *map(str, paths)], capture_output=True, text=True)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
    assert not lines, "dcentvfy:\n" + "\n".join(lines[:20])


def dcmqi_masks(seg_path: Path, out_dir: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """segimage2itkimage's NIfTI per segment: number -> (array (i, j, k), LPS affine)."""
    if not DCMQI.exists():
        pytest.fail(f"dcmqi not installed ({DCMQI}); pip install dcmqi", pytrace=False)
    out_dir.mkdir(parents=True, exist_ok=True)  # it exits 0 even when it cannot write
    proc = subprocess.run([str(DCMQI), "--inputDICOM", str(seg_path), "--outputDirectory",
                           str(out_dir), "-t", "nii"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = {}
    for f in sorted(out_dir.glob("*.nii.gz")):
        img = load_nifti(f)
        out[int(f.name.split(".")[0])] = (np.asarray(img.dataobj), lps_affine(img.affine))
    assert out, f"dcmqi wrote no NIfTI: {proc.stdout}{proc.stderr}"
    return out


# --------------------------------------------------------------------------------------------
# geometry: from any LPS-affine array into the input grid
# --------------------------------------------------------------------------------------------
def into_grid(arr: np.ndarray, affine_lps: np.ndarray, grid_affine: np.ndarray,
              grid_shape) -> np.ndarray:
    """Places `arr` (3-D, voxel -> LPS by `affine_lps`) into an (i, j, k) grid; every voxel must
    land on a grid voxel (within 1e-3). Voxels not covered are 0."""
    idx = np.indices(arr.shape).reshape(3, -1).astype(np.float64)
    world = affine_lps @ np.vstack([idx, np.ones(idx.shape[1])])
    ijk = np.linalg.inv(grid_affine) @ world
    rounded = np.rint(ijk[:3]).astype(np.int64)
    assert np.abs(ijk[:3] - rounded).max() < 1e-3, "a SEG voxel is off the input grid"
    for axis in range(3):
        assert rounded[axis].min() >= 0 and rounded[axis].max() < grid_shape[axis], \
            "a SEG voxel lies outside the input grid"
    out = np.zeros(grid_shape, dtype=arr.dtype)
    out[rounded[0], rounded[1], rounded[2]] = arr.reshape(-1)
    return out


def frame_slices(ds, grid_affine: np.ndarray) -> list[int]:
    """k of every frame, from its ImagePositionPatient and the NIfTI affine."""
    inv = np.linalg.inv(grid_affine)
    ks = []
    for item in ds.PerFrameFunctionalGroupsSequence:
        ipp = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        ijk = inv @ np.append(ipp, 1.0)
        assert np.allclose(ijk[:2], 0, atol=1e-3), f"frame origin {ijk[:3]} is not at (0, 0, k)"
        assert abs(ijk[2] - round(ijk[2])) < 1e-3
        ks.append(int(round(ijk[2])))
    return ks


# --------------------------------------------------------------------------------------------
# what a run should have written
# --------------------------------------------------------------------------------------------
class Grid:
    """The input grid of a run, and its label and probability maps (i, j, k)."""

    def __init__(self, run):
        img = run.img("labels")
        self.affine = lps_affine(img.affine)
        self.labels = np.asarray(img.dataobj).astype(np.int64)
        self.shape = self.labels.shape
        self.run = run

    def probability(self) -> np.ndarray:
        return self.run.img("probability").get_fdata(dtype=np.float32)


def segment_masks(ds, report_seg: dict, grid: Grid) -> dict[int, np.ndarray]:
    """Segment number -> expected boolean mask (i, j, k): segment 1 = labels > 0, a blob's
    segment = labels == blob id (the report's mapping), a decision's segment ("Tumor: accept")
    = labels in the ids of the report's blobs with that decision."""
    blob_of = {s["number"]: s.get("blob_id") for s in report_seg["binary"]["segments"]}
    masks = {}
    for item in ds.SegmentSequence:
        n = int(item.SegmentNumber)
        decision = str(item.SegmentLabel).removeprefix("Tumor: ")
        if decision in ("accept", "review", "reject"):
            ids = [b["id"] for b in grid.run.report["blobs"] if b["decision"] == decision]
            masks[n] = np.isin(grid.labels, ids)
        else:
            masks[n] = grid.labels > 0 if blob_of[n] is None else grid.labels == blob_of[n]
    return masks


def check_common(ds, sop_class: str = SEG_SOP_CLASS) -> None:
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_VR_LE
    assert ds.SOPClassUID == sop_class
    assert ds.Modality == "SEG"
    for kw in ("Manufacturer", "ManufacturerModelName", "DeviceSerialNumber",
               "SoftwareVersions"):
        assert str(getattr(ds, kw, "")).strip(), f"{kw} must be non-empty (type 1)"
    assert int(ds.NumberOfFrames) == len(ds.PerFrameFunctionalGroupsSequence) >= 1
    numbers = [int(s.SegmentNumber) for s in ds.SegmentSequence]
    assert numbers == list(range(1, len(numbers) + 1))
    for s in ds.SegmentSequence:
        assert s.SegmentAlgorithmType == "AUTOMATIC" and s.SegmentAlgorithmName == "stochseg"
        alg = s.SegmentationAlgorithmIdentificationSequence[0]
        fam = alg.AlgorithmFamilyCodeSequence[0]
        assert (fam.CodeValue, fam.CodingSchemeDesignator) == ("123110", "DCM")
        assert alg.AlgorithmName == "stochseg" and alg.AlgorithmVersion
        cat = s.SegmentedPropertyCategoryCodeSequence[0]
        typ = s.SegmentedPropertyTypeCodeSequence[0]
        assert (cat.CodeValue, cat.CodingSchemeDesignator) == ("49755003", "SCT")
        assert (typ.CodeValue, typ.CodingSchemeDesignator) == ("108369006", "SCT")
    dims = [(d.DimensionIndexPointer, d.FunctionalGroupPointer)
            for d in ds.DimensionIndexSequence]
    assert dims == [(0x0062000B, 0x0062000A), (0x00200032, 0x00209113)]
    for item in ds.PerFrameFunctionalGroupsSequence:
        assert len(item.FrameContentSequence[0].DimensionIndexValues) == 2
    for v in list(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                  .ImageOrientationPatient):
        assert len(str(v)) <= 16


def expected_binary_bytes(ds, masks: dict, grid: Grid) -> bytes:
    """numpy's packing of the frames the SEG says it holds (rows j, columns i)."""
    ks = frame_slices(ds, grid.affine)
    frames = []
    for item, k in zip(ds.PerFrameFunctionalGroupsSequence, ks):
        n = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        frames.append(masks[n][:, :, k].T)
    packed = np.packbits(np.stack(frames).ravel(), bitorder="little").tobytes()
    return packed + b"\0" * (len(packed) % 2)


def check_binary_seg(run, path: Path, tmp: Path) -> dict:
    """All readers and validators on a BINARY SEG; returns {segment number: mask on grid}."""
    dciodvfy(path)
    dcmftest(path)
    ds = pydicom.dcmread(path)
    check_common(ds)
    assert ds.SegmentationType == "BINARY" and int(ds.BitsAllocated) == 1
    rep = run.report["seg"]
    assert rep["binary"]["file"] == path.name
    assert ds.SOPInstanceUID == rep["binary"]["sop_instance_uid"]
    assert ds.SeriesInstanceUID == rep["binary"]["series_instance_uid"]
    assert int(ds.NumberOfFrames) == rep["binary"]["frames"]
    assert ds.StudyInstanceUID == rep["study_instance_uid"]
    assert ds.FrameOfReferenceUID == rep["frame_of_reference_uid"]
    grid = Grid(run)
    assert (int(ds.Rows), int(ds.Columns)) == (grid.shape[1], grid.shape[0])
    masks = segment_masks(ds, rep, grid)
    for s in rep["binary"]["segments"]:
        assert s["voxels"] == int(masks[s["number"]].sum())
    # pixel data: byte for byte what numpy packs
    expected = expected_binary_bytes(ds, masks, grid)
    assert len(ds.PixelData) == len(expected)
    assert ds.PixelData == expected, "PixelData differs from np.packbits of the labels"
    # pydicom's own unpacking
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), grid.shape[1], grid.shape[0])
    unpacked = np.unpackbits(np.frombuffer(expected, np.uint8), bitorder="little")
    assert np.array_equal(pixels.ravel() != 0, unpacked[:pixels.size] != 0)
    # highdicom, back on the input grid
    import highdicom as hd

    vol = hd.seg.segread(path).get_volume(combine_segments=False)
    numbers = sorted(masks)
    for c, n in enumerate(numbers):
        got = into_grid(vol.array[..., c], vol.affine, grid.affine, grid.shape)
        assert np.array_equal(got != 0, masks[n]), f"highdicom: segment {n} differs"
    # dcmqi, back on the input grid
    for n, (arr, aff) in dcmqi_masks(path, tmp / f"dcmqi-{run.out.name}-{path.stem}").items():
        got = into_grid(arr, aff, grid.affine, grid.shape)
        assert np.array_equal(got != 0, masks[n]), f"dcmqi: segment {n} differs"
    return masks


def check_fractional_seg(run, path: Path) -> None:
    dciodvfy(path)
    dcmftest(path)
    ds = pydicom.dcmread(path)
    check_common(ds)
    assert ds.SegmentationType == "FRACTIONAL"
    assert ds.SegmentationFractionalType == "PROBABILITY"
    assert int(ds.MaximumFractionalValue) == 255 and int(ds.BitsAllocated) == 8
    rep = run.report["seg"]["fractional"]
    assert ds.SOPInstanceUID == rep["sop_instance_uid"] and rep["file"] == path.name
    grid = Grid(run)
    expected_q = np.round(grid.probability().astype(np.float64) * 255).astype(np.uint8)
    ks = frame_slices(ds, grid.affine)
    frames = np.stack([expected_q[:, :, k].T for k in ks])
    data = np.frombuffer(ds.PixelData, np.uint8)
    assert data.size == frames.size + frames.size % 2
    assert np.array_equal(data[:frames.size], frames.ravel()), "stored values != round(p*255)"
    omitted = sorted(set(range(grid.shape[2])) - set(ks))
    assert not expected_q[:, :, omitted].any(), "a frame with nonzero values was left out"
    import highdicom as hd

    vol = hd.seg.segread(path).get_volume(combine_segments=False, rescale_fractional=False)
    got = into_grid(vol.array[..., 0], vol.affine, grid.affine, grid.shape)
    assert np.array_equal(got, expected_q), "highdicom: fractional values differ"


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------
def p32_args():
    return ["--deterministic", "--threads", "2"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("seg")


@pytest.fixture(scope="module")
def odd_case(work) -> Path:
    """case-small cropped in-plane to 91 x 105 voxels (9555 a frame, not a multiple of 8), so
    frames start mid-byte in the bit stream."""
    out = work / "case-odd"
    out.mkdir()
    for c, p in case_channel_paths().items():
        img = load_nifti(p)
        img.slicer[2:93, 3:108, :].to_filename(str(out / f"{CASE_ID}-{c}.nii.gz"))
    return out


@pytest.fixture(scope="module")
def full_run(work, odd_case):
    """Per-blob segments, the fractional SEG and the source series, on the odd-sized case."""
    cfg = write_config(work / "full.yaml", [model_path("unet-p32")],
                       {"dicom_output": {"per_blob_segments": True, "probability_seg": True,
                                         "patient_name": "Test^Case", "patient_id": "P-42"}})
    return run_ok(work / "full", "--pipeline", cfg, "--case", odd_case,
                  "--write-source-dicom", *p32_args())


def test_default_seg_matches_the_labels(work):
    run = run_ok(work / "default", "--model", model_path("unet-p32"), "--case", CASE_DIR,
                 *p32_args())
    assert (run.out / "seg.dcm").is_file()
    assert not (run.out / "prob-seg.dcm").exists() and not (run.out / "source-dicom").exists()
    assert "seg.dcm" in run.report["outputs"]
    masks = check_binary_seg(run, run.out / "seg.dcm", work)
    assert list(masks) == [1], "default: one segment, the whole tumor"
    assert run.report["blobs"], "the fixture case should have blobs"
    assert all("seg_segment_number" not in b for b in run.report["blobs"])
    ds = pydicom.dcmread(run.out / "seg.dcm")
    # stand-alone SEG of a NIfTI case: own de-identified patient and study, no references
    assert run.report["seg"]["study_origin"] == "new"
    assert run.report["seg"]["referenced_series"] == []
    assert "ReferencedSeriesSequence" not in ds
    assert str(ds.PatientID) == CASE_ID and str(ds.PatientName) == "Anonymous^"
    assert ds.StudyInstanceUID.startswith("2.25.") and len(ds.StudyInstanceUID) <= 64
    # omitted empty frames: exactly the slices holding tumor
    grid = Grid(run)
    assert sorted(frame_slices(ds, grid.affine)) == \
        [k for k in range(grid.shape[2]) if (grid.labels[:, :, k] > 0).any()]


def test_per_blob_segments_on_an_odd_frame_size(full_run, work):
    run = full_run
    masks = check_binary_seg(run, run.out / "seg.dcm", work)
    blobs = run.report["blobs"]
    assert len(blobs) >= 2, "the cropped case should still have several blobs"
    assert len(masks) == len(blobs) + 1
    ds = pydicom.dcmread(run.out / "seg.dcm")
    assert ds.SegmentsOverlap == "YES"
    assert (int(ds.Rows) * int(ds.Columns)) % 8 != 0
    labels = {int(s.SegmentNumber): s.SegmentLabel for s in ds.SegmentSequence}
    for b in blobs:
        n = b["seg_segment_number"]
        assert n == b["id"] + 1
        assert labels[n] == f"Blob {b['id']} (confidence {b['mean_logit']:.2f})"
        assert int(masks[n].sum()) == b["voxels"]
    assert str(ds.PatientName) == "Test^Case" and str(ds.PatientID) == "P-42"


def test_decision_segments(work):
    """Segments 2-4 are the accepted, review and rejected blobs (here blob 1 at mean logit 10.2
    is accepted, blob 2 at 9.7 rejected, none is for review: an empty segment with one frame);
    per-blob segments follow from 5."""
    decisions = {"accept": 10.0, "reject": 9.9}
    cfg = write_config(work / "decisions.yaml", [model_path("unet-p32")],
                       {"blobs": {"decisions": decisions},
                        "dicom_output": {"decision_segments": True, "per_blob_segments": True}})
    run = run_ok(work / "decisions", "--pipeline", cfg, "--case", CASE_DIR, *p32_args())
    masks = check_binary_seg(run, run.out / "seg.dcm", work)
    blobs = run.report["blobs"]
    assert [b["decision"] for b in blobs] == ["accept", "reject"], blobs
    ds = pydicom.dcmread(run.out / "seg.dcm")
    items = {int(x.SegmentNumber): x for x in ds.SegmentSequence}
    assert [items[n].SegmentLabel for n in (1, 2, 3, 4)] == \
        ["Tumor", "Tumor: accept", "Tumor: review", "Tumor: reject"]
    assert "mean logit >= 10" in items[2].SegmentDescription
    assert "9.9 <= mean logit < 10" in items[3].SegmentDescription
    assert "mean logit < 9.9" in items[4].SegmentDescription
    labels = Grid(run).labels
    assert np.array_equal(masks[2], labels == 1) and masks[2].any()
    assert not masks[3].any()
    assert np.array_equal(masks[4], labels == 2) and masks[4].any()
    assert np.array_equal(masks[2] | masks[3] | masks[4], masks[1])
    frames = [int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
              for f in ds.PerFrameFunctionalGroupsSequence]
    assert frames.count(3) == 1, "the empty review segment keeps one (empty) frame"
    assert [b["seg_segment_number"] for b in blobs] == [5, 6]
    report_segments = run.report["seg"]["binary"]["segments"]
    assert [s["voxels"] for s in report_segments[1:4]] == \
        [blobs[0]["voxels"], 0, blobs[1]["voxels"]]


@pytest.mark.parametrize("extra,needle", [
    ({"dicom_output": {"decision_segments": True}}, "needs /blobs/decisions"),
    ({"blobs": {"decisions": {"accept": 1.0, "reject": 0.0}},
      "dicom_output": {"decision_segments": True, "seg_blobs": "accepted"}}, "seg_blobs"),
])
def test_decision_segments_need_decisions_and_all_blobs(work, extra, needle):
    cfg = write_config(work / "bad-decisions.yaml", [model_path("unet-p32")], extra)
    proc = stochseg("run", "--pipeline", cfg, "--case", CASE_DIR, "--out", work / "bad-out")
    assert proc.returncode == 2, proc.stderr
    assert "/dicom_output/decision_segments" in error_line(proc) and needle in error_line(proc)
    assert not (work / "bad-out").exists()


def test_a_reference_channel_that_is_no_channel_is_a_config_error(work):
    cfg = write_config(work / "bad-reference.yaml", [model_path("unet-p32")],
                       {"dicom_output": {"reference_channel": "flair"}})
    proc = stochseg("run", "--pipeline", cfg, "--case", CASE_DIR, "--out", work / "bad-ref")
    assert proc.returncode == 2, proc.stderr
    assert "/dicom_output/reference_channel: 'flair' is not one of the channels " \
        "(t1n, t1c, t2w, t2f)" in error_line(proc)
    assert not (work / "bad-ref").exists()


def test_fractional_seg_stores_rounded_probability(full_run):
    check_fractional_seg(full_run, full_run.out / "prob-seg.dcm")
    assert "prob-seg.dcm" in full_run.report["outputs"]


def test_source_dicom_series_are_read_and_referenced(full_run):
    run = full_run
    rep = run.report["seg"]
    grid = Grid(run)
    written = {s["channel"]: s for s in rep["source_dicom"]}
    assert sorted(written) == sorted(CHANNELS)
    import highdicom as hd

    all_files = []
    for c, info in written.items():
        folder = run.out / info["folder"]
        files = sorted(folder.glob("*.dcm"))
        assert len(files) == info["instances"] == grid.shape[2]
        dss = [pydicom.dcmread(f) for f in files]
        all_files += files
        for f in (files[0], files[-1]):
            dciodvfy(f)
            dcmftest(f)
        assert {d.SeriesInstanceUID for d in dss} == {info["series_instance_uid"]}
        assert {d.StudyInstanceUID for d in dss} == {rep["study_instance_uid"]}
        assert {d.FrameOfReferenceUID for d in dss} == {rep["frame_of_reference_uid"]}
        assert all(d.SOPClassUID == MR_SOP_CLASS and d.Modality == "MR" for d in dss)
        # values: stored x slope + intercept is the NIfTI channel within the reported error
        nifti = load_nifti(case_channel_paths(run.out.parent / "case-odd")[c])
        expected = nifti.get_fdata(dtype=np.float64)
        for d in dss:
            ipp = np.array([float(v) for v in d.ImagePositionPatient])
            k = int(round((np.linalg.inv(grid.affine) @ np.append(ipp, 1))[2]))
            values = d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + \
                float(d.RescaleIntercept)
            err = np.abs(values - expected[:, :, k].T).max()
            assert err <= info["max_abs_error"] + 1e-9
        # highdicom assembles the series into a volume on the same grid
        vol = hd.get_volume_from_series(dss)
        got = into_grid(vol.array, vol.affine, grid.affine, grid.shape)
        assert np.abs(got - expected).max() <= info["max_abs_error"] + 1e-6
    # the SEGs reference one written series, the default reference channel's (t2f): every
    # instance of it, and per frame its slice k
    reference = written["t2f"]["series_instance_uid"]
    assert [(s["channel"], s["series_instance_uid"]) for s in rep["referenced_series"]] == \
        [("t2f", reference)]
    seg_paths = [run.out / "seg.dcm", run.out / "prob-seg.dcm"]
    by_uid = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in all_files}
    t2f_uids = {u for u, f in by_uid.items() if f.parent.name == "t2f"}
    for p in seg_paths:
        ds = pydicom.dcmread(p)
        refs = {r.SeriesInstanceUID: [i.ReferencedSOPInstanceUID
                                      for i in r.ReferencedInstanceSequence]
                for r in ds.ReferencedSeriesSequence}
        assert list(refs) == [reference]
        assert set(refs[reference]) == t2f_uids
        ks = frame_slices(ds, grid.affine)
        for item, k in zip(ds.PerFrameFunctionalGroupsSequence, ks):
            der = item.DerivationImageSequence[0]
            assert der.DerivationCodeSequence[0].CodeValue == "113076"
            assert len(der.SourceImageSequence) == 1
            src = der.SourceImageSequence[0]
            assert src.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
            assert src.ReferencedSOPInstanceUID in t2f_uids
            ref = pydicom.dcmread(by_uid[src.ReferencedSOPInstanceUID], stop_before_pixels=True)
            assert int(ref.InstanceNumber) == k + 1
            assert list(ref.ImagePositionPatient) == \
                list(item.PlanePositionSequence[0].ImagePositionPatient)
    dcentvfy(*seg_paths, *all_files)


def test_no_blob_still_gives_a_valid_seg(work):
    run = run_ok(work / "none", "--model", model_path("unet-p32"), "--case", CASE_DIR,
                 "--threshold", "50", *p32_args())
    assert run.report["blobs"] == []
    masks = check_binary_seg(run, run.out / "seg.dcm", work)
    assert not masks[1].any()
    ds = pydicom.dcmread(run.out / "seg.dcm")
    assert int(ds.NumberOfFrames) == 1, "an empty segment keeps one (empty) frame"
    assert run.report["seg"]["binary"]["segments"][0]["voxels"] == 0


def test_seg_of_a_dicom_case_joins_the_source_study(work):
    """DICOM input (series written by tests/fixtures/dicom/make_series.py): the SEG copies the
    patient and study of the reference channel's series (t1c here), shares its frame of
    reference, keeps its geometry strings, and references its instances only, each frame its
    slice; --write-source-dicom writes nothing."""
    src = work / "dicom-plain"
    proc = subprocess.run([sys.executable, str(require(MAKE_SERIES)), str(CASE_DIR), str(src),
                           "--variant", "plain"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    inputs = [a for c in CHANNELS for a in ("--input", f"{c}={src / c}")]
    cfg = write_config(work / "dicom-t1c.yaml", [model_path("unet-p32")],
                       {"dicom_output": {"reference_channel": "t1c"}})
    run = run_ok(work / "from-dicom", "--pipeline", cfg, *inputs, "--write-source-dicom",
                 *p32_args())
    assert not (run.out / "source-dicom").exists()
    assert "its own series are referenced" in run.proc.stderr
    seg_path = run.out / "seg.dcm"
    check_binary_seg(run, seg_path, work)
    ds = pydicom.dcmread(seg_path)
    sources = {c: sorted((src / c).glob("*.dcm")) for c in CHANNELS}
    first = pydicom.dcmread(sources["t1c"][0], stop_before_pixels=True)
    assert run.report["seg"]["study_origin"] == "dicom_source"
    assert ds.StudyInstanceUID == first.StudyInstanceUID
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
               "StudyID", "AccessionNumber"):
        assert str(getattr(ds, kw, "")) == str(getattr(first, kw, "")), kw
    headers = {c: [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
               for c, files in sources.items()}
    assert [r.SeriesInstanceUID for r in ds.ReferencedSeriesSequence] == \
        [headers["t1c"][0].SeriesInstanceUID]
    assert run.report["seg"]["referenced_series"] == [
        {"channel": "t1c", "series_instance_uid": headers["t1c"][0].SeriesInstanceUID,
         "instances": len(headers["t1c"])}]
    by_uid = {h.SOPInstanceUID: h for h in headers["t1c"]}
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert list(shared.PlaneOrientationSequence[0].ImageOrientationPatient) == \
        list(first.ImageOrientationPatient)
    for item in ds.PerFrameFunctionalGroupsSequence:
        refs = item.DerivationImageSequence[0].SourceImageSequence
        assert len(refs) == 1
        for r in refs:
            h = by_uid[r.ReferencedSOPInstanceUID]
            assert r.ReferencedSOPClassUID == h.SOPClassUID
            # verbatim ImagePositionPatient of the referenced slice
            assert list(item.PlanePositionSequence[0].ImagePositionPatient) == \
                list(h.ImagePositionPatient)
    dcentvfy(seg_path, *[f for files in sources.values() for f in files])
    # highdicom maps the frames to the source instances it references
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    t1c = [h.SOPInstanceUID for h in headers["t1c"]]
    referenced = [u for u in t1c if u in {r.ReferencedSOPInstanceUID for item in
                                           ds.PerFrameFunctionalGroupsSequence for r in
                                           item.DerivationImageSequence[0].SourceImageSequence}]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=referenced,
                                               segment_numbers=[1])
    assert pixels.shape[0] == len(referenced) and pixels.any()


def test_zz_list_dciodvfy_warnings():
    """Not a check: shows the dciodvfy warnings the SEG and MR files gave (pytest -rP)."""
    for name, warnings in sorted(WARNINGS.items()):
        for w in sorted(warnings):
            print(f"{name}: {w}")
