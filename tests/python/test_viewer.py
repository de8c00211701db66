"""The SEG opens right in the viewers people use: OHIF's loader as a real client.

tests/viewer/load-seg.mjs loads a SEG with the code OHIF runs for it (@cornerstonejs/adapters'
``createFromDICOMSegBuffer`` on dcmjs, pinned in tests/viewer/package-lock.json; ``make test``
installs it with ``npm ci``), on the image series the SEG references, and writes the labelmap it
got and every warning the loader logged. Here the labelmap is put back on the input grid (each
stack image's ImagePositionPatient, orientation and spacing through the labels.nii.gz affine) and
must equal, for every segment, what labels.nii.gz says: labels > 0 for the tumor, labels == id
for a blob. A warning or an error from the loader is a failure. 3D Slicer's route (dcmqi's
segimage2itkimage) must give the same masks.

Which series OHIF draws a SEG on is decided before the adapter runs: OHIF's SEG SOP class
handler (extensions/cornerstone-dicom-seg, getSopClassHandlerModule) takes every loaded series
that has an instance listed in the SEG's ReferencedSeriesSequence and uses the first one it
loaded, warning when there are several. `ohif_candidates` applies that rule to the case's
series, so a SEG that lists more than the reference series fails here too.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import (
    CASE_DIR,
    CHANNELS,
    ROOT,
    lps_affine,
    model_path,
    require,
    run_ok,
    write_config,
)
from test_seg import dciodvfy, dcmftest, dcmqi_masks, into_grid

VIEWER = ROOT / "tests" / "viewer"
LOADER = VIEWER / "load-seg.mjs"


# --------------------------------------------------------------------------------------------
# OHIF's loader
# --------------------------------------------------------------------------------------------
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node not found: apt-get install -y nodejs npm (see .ci/run)", pytrace=False)
    if not (VIEWER / "node_modules" / "@cornerstonejs" / "adapters").is_dir():
        pytest.fail(f"{VIEWER}/node_modules is missing: (cd tests/viewer && npm ci), as "
                    "`make test` does", pytrace=False)
    return path


def load_in_ohif(seg: Path, series: list[Path], out: Path) -> tuple[dict, np.ndarray | None]:
    """Runs the loader; returns its result.json and the labelmap layers
    [layer, stack image, row, column] (None when it threw)."""
    proc = subprocess.run([node(), str(require(LOADER)), str(seg), str(out), *map(str, series)],
                          capture_output=True, text=True, timeout=120, cwd=VIEWER)
    assert proc.returncode in (0, 1), f"loader exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    result = json.loads((out / "result.json").read_text())
    if result["error"] is not None:
        return result, None
    layers = np.fromfile(out / "layers.u8", np.uint8).reshape(
        result["layers"], len(result["stack"]), result["rows"], result["columns"])
    return result, layers


def on_grid(result: dict, layers: np.ndarray, series: list[Path], labels_img) -> dict:
    """Segment number -> boolean mask (i, j, k) on the labels grid, from the loader's layers."""
    grid = lps_affine(labels_img.affine)
    shape = labels_img.shape
    headers = {h.SOPInstanceUID: h for h in
               (pydicom.dcmread(f, stop_before_pixels=True) for f in series)}
    masks = {s["number"]: np.zeros(shape, bool) for s in result["segments"]}
    for slot, uid in enumerate(result["stack"]):
        h = headers[uid]
        iop = np.array(h.ImageOrientationPatient, float)
        dy, dx = (float(v) for v in h.PixelSpacing)
        affine = np.eye(4)  # (column, row, 0) -> LPS
        affine[:3, 0], affine[:3, 1] = iop[:3] * dx, iop[3:] * dy
        affine[:3, 3] = np.array(h.ImagePositionPatient, float)
        for n, mask in masks.items():
            drawn = (layers[:, slot] == n).any(axis=0).T[:, :, None]  # (column, row, 1)
            mask |= into_grid(drawn, affine, grid, shape)
    return masks


def expected_masks(run) -> dict:
    labels = np.asarray(run.img("labels").dataobj)
    out = {}
    for s in run.report["seg"]["binary"]["segments"]:
        out[s["number"]] = labels > 0 if s.get("blob_id") is None else labels == s["blob_id"]
    return out


def level_masks(run) -> dict:
    """prob-levels-seg.dcm's segments: probability.nii.gz >= each level."""
    p = run.img("probability").get_fdata(dtype=np.float32).astype(np.float64)
    levels = run.report["seg"]["levels"]["segments"]
    return {s["number"]: p >= float(s["label"].split(">= ")[1]) for s in levels}


def ohif_problems(run, seg: Path, series: list[Path], tmp: Path,
                  expected: dict | None = None) -> list[str]:
    """What is wrong with the SEG opened in OHIF's loader on `series`; empty when it shows
    exactly `expected` (default: labels.nii.gz's segments) with no warning."""
    result, layers = load_in_ohif(seg, series, tmp)
    problems = [f"loader threw: {result['error']}"] if result["error"] else []
    problems += [f"loader warned: {w}" for w in result["warnings"][:3]]
    problems += [f"loader logged an error: {e}" for e in result["errors"][:3]]
    if layers is None:
        return problems
    got = on_grid(result, layers, series, run.img("labels"))
    for n, want in (expected or expected_masks(run)).items():
        have = got.get(n)
        if have is None or not np.array_equal(have, want):
            diff = int((have != want).sum()) if have is not None else int(want.sum())
            problems.append(f"segment {n} differs from the expected mask in {diff} voxels")
    return problems


def ohif_candidates(seg: Path, series_by_channel: dict[str, list[Path]]) -> list[str]:
    """Channels whose series OHIF's SEG handler takes as the SEG's display set: those with an
    instance listed in ReferencedSeriesSequence (it uses the first and warns if several)."""
    ds = pydicom.dcmread(seg, stop_before_pixels=True)
    listed = {(r.SeriesInstanceUID, i.ReferencedSOPInstanceUID)
              for r in ds.ReferencedSeriesSequence for i in r.ReferencedInstanceSequence}
    out = []
    for channel, files in series_by_channel.items():
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        if any((h.SeriesInstanceUID, h.SOPInstanceUID) in listed for h in headers):
            out.append(channel)
    return out


def check_in_viewers(run, seg: Path, series_by_channel: dict, reference: str, tmp: Path):
    """OHIF picks the reference channel's series and shows exactly the labels on it; dcmqi
    (3D Slicer's converter) gives the same masks."""
    assert ohif_candidates(seg, series_by_channel) == [reference]
    assert all(m.any() for m in expected_masks(run).values()), "an empty segment proves little"
    problems = ohif_problems(run, seg, series_by_channel[reference], tmp / f"ohif-{seg.stem}")
    assert not problems, "\n".join(problems)
    grid = lps_affine(run.img("labels").affine)
    labels_shape = run.img("labels").shape
    expected = expected_masks(run)
    slicer = dcmqi_masks(seg, tmp / f"dcmqi-{seg.stem}")
    assert sorted(slicer) == sorted(expected)
    for n, (arr, aff) in slicer.items():
        got = into_grid(arr, aff, grid, labels_shape) != 0
        assert np.array_equal(got, expected[n]), f"dcmqi: segment {n} differs"


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("viewer")


def config(work: Path, name: str, **dicom_output) -> Path:
    return write_config(work / f"{name}.yaml", [model_path("unet-p32")],
                        {"dicom_output": {"per_blob_segments": True, **dicom_output}})


@pytest.fixture(scope="module")
def nifti_run(work):
    """NIfTI input, per-blob segments, the FRACTIONAL SEG and the channels as MR series."""
    cfg = config(work, "nifti", probability_seg=True, probability_levels=[0.25, 0.5, 0.9])
    return run_ok(work / "nifti", "--pipeline", cfg,
                  "--case", CASE_DIR, "--write-source-dicom", "--deterministic",
                  "--threads", "2")


def written_series(run) -> dict[str, list[Path]]:
    return {s["channel"]: sorted((run.out / s["folder"]).glob("*.dcm"))
            for s in run.report["seg"]["source_dicom"]}


@pytest.fixture(scope="module")
def dicom_run(work, dicom_series):
    """DICOM input (tests/fixtures/dicom/make_series.py), reference channel t1c."""
    meta = dicom_series.get("plain")
    inputs = [a for c in CHANNELS for a in ("--input", f"{c}={meta['channels'][c]['folder']}")]
    run = run_ok(work / "dicom", "--pipeline", config(work, "dicom", reference_channel="t1c"),
                 *inputs, "--deterministic", "--threads", "2")
    run.series = {c: sorted(Path(meta["channels"][c]["folder"]).glob("*.dcm"))
                  for c in CHANNELS}
    return run


def test_nifti_case_opens_on_flair_in_ohif_and_slicer(nifti_run, work):
    run = nifti_run
    assert len(run.report["blobs"]) >= 2 and len(expected_masks(run)) == 1 + len(run.report["blobs"])
    check_in_viewers(run, run.out / "seg.dcm", written_series(run), "t2f", work)


def test_dicom_case_opens_on_the_chosen_input_series(dicom_run, work):
    run = dicom_run
    assert [s["channel"] for s in run.report["seg"]["referenced_series"]] == ["t1c"]
    check_in_viewers(run, run.out / "seg.dcm", run.series, "t1c", work)


def test_ohif_refuses_the_fractional_seg_and_dcmqi_reads_it(nifti_run, work):
    """What docs/dicom.md says: OHIF's loader reads no true FRACTIONAL SEG; dcmqi (3D Slicer's
    converter) gives its stored values, round(p x 255)."""
    run = nifti_run
    seg = run.out / "prob-seg.dcm"
    result, layers = load_in_ohif(seg, written_series(run)["t2f"], work / "ohif-fractional")
    assert layers is None
    assert result["error"] == "Fractional segmentations are not yet supported"
    p = run.img("probability").get_fdata(dtype=np.float32).astype(np.float64)
    (arr, aff), = dcmqi_masks(seg, work / "dcmqi-fractional").values()
    got = into_grid(arr, aff, lps_affine(run.img("labels").affine), p.shape)
    assert np.array_equal(got, np.round(p * 255)), "dcmqi: fractional values differ"


def test_probability_levels_open_in_ohif_and_slicer(nifti_run, work):
    """prob-levels-seg.dcm, the probability as nested BINARY segments, is what OHIF can show of
    it: each segment is exactly probability.nii.gz >= its level, in OHIF's loader and dcmqi."""
    run = nifti_run
    seg = run.out / "prob-levels-seg.dcm"
    assert "prob-levels-seg.dcm" in run.report["outputs"]
    dciodvfy(seg)
    dcmftest(seg)
    ds = pydicom.dcmread(seg)
    assert ds.SegmentationType == "BINARY" and ds.SegmentsOverlap == "YES"
    expected = level_masks(run)
    assert sorted(expected) == [1, 2, 3]
    assert expected[1].sum() > expected[2].sum() > expected[3].sum() > 0
    series = written_series(run)
    assert ohif_candidates(seg, series) == ["t2f"]
    problems = ohif_problems(run, seg, series["t2f"], work / "ohif-levels", expected)
    assert not problems, "\n".join(problems)
    grid = lps_affine(run.img("labels").affine)
    for n, (arr, aff) in dcmqi_masks(seg, work / "dcmqi-levels").items():
        got = into_grid(arr, aff, grid, expected[n].shape) != 0
        assert np.array_equal(got, expected[n]), f"dcmqi: level segment {n} differs"


def test_a_frame_pointing_at_the_wrong_slice_fails(nifti_run, work):
    """A copy of seg.dcm whose first tumor frame names the next slice's image as its source:
    OHIF's loader draws it there, and the comparison says so."""
    run = nifti_run
    series = written_series(run)["t2f"]
    ds = pydicom.dcmread(run.out / "seg.dcm")
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series]
    frame = ds.PerFrameFunctionalGroupsSequence[0]
    source = frame.DerivationImageSequence[0].SourceImageSequence[0]
    k = uids.index(source.ReferencedSOPInstanceUID)
    source.ReferencedSOPInstanceUID = uids[k + 1]
    wrong = work / "wrong-slice.dcm"
    ds.save_as(wrong, enforce_file_format=True)
    problems = ohif_problems(run, wrong, series, work / "ohif-wrong")
    assert any(p.startswith("segment 1 differs") for p in problems), problems


def test_a_seg_opened_on_another_series_warns_and_fails(nifti_run, work):
    """Loaded on a series it does not reference (t1n), the loader finds no source image and
    warns ("No imageId found for SOPInstanceUID"); warnings are failures."""
    problems = ohif_problems(nifti_run, nifti_run.out / "seg.dcm",
                             written_series(nifti_run)["t1n"], work / "ohif-t1n")
    assert any("No imageId found for SOPInstanceUID" in p for p in problems), problems
    assert any(p.startswith("segment 1 differs") for p in problems), problems


def test_a_seg_listing_every_channel_confuses_ohif(nifti_run, work):
    """Why the SEG lists one series: with every channel's series in ReferencedSeriesSequence
    (as stochseg wrote before reference_channel), OHIF has four candidates and draws the SEG on
    the first it loaded, not on the one the frames reference."""
    run = nifti_run
    series = written_series(run)
    ds = pydicom.dcmread(run.out / "seg.dcm")
    template = ds.ReferencedSeriesSequence[0]
    items = []
    for channel in CHANNELS:
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in series[channel]]
        item = pydicom.Dataset()
        item.SeriesInstanceUID = headers[0].SeriesInstanceUID
        item.ReferencedInstanceSequence = [pydicom.Dataset() for _ in headers]
        for ref, h in zip(item.ReferencedInstanceSequence, headers):
            ref.ReferencedSOPClassUID = h.SOPClassUID
            ref.ReferencedSOPInstanceUID = h.SOPInstanceUID
        items.append(item)
    assert template.SeriesInstanceUID in {i.SeriesInstanceUID for i in items}
    ds.ReferencedSeriesSequence = items
    every = work / "every-channel.dcm"
    ds.save_as(every, enforce_file_format=True)
    assert ohif_candidates(every, series) == list(CHANNELS)


def region_masks(run) -> dict:
    """A SEG of several regions: the label map's segments (labels-brats == label), then each
    region's blobs (its labels map == blob id; segments[].region names the region)."""
    brats = np.asarray(run.img("labels-brats").dataobj)
    primary = run.report["region"]["name"]
    out = {}
    for s in run.report["seg"]["binary"]["segments"]:
        region = s.get("region")
        if region is None:
            label = next(x["label"] for x in run.report["label_map"]["labels"]
                         if x["name"] == s["label"])
            out[s["number"]] = brats == label
        else:
            name = "labels" if region == primary else f"labels-{region}"
            out[s["number"]] = np.asarray(run.img(name).dataobj) == s["blob_id"]
    return out


def test_a_seg_of_several_regions_opens_in_ohif_and_slicer(work):
    """Four-class model: NETC, SNFH and ET segments and every region's blobs, overlapping, all
    shown by OHIF's loader on the t2f series and by dcmqi exactly as the maps say."""
    cfg = write_config(work / "regions.yaml", [ROOT / "onnx" / "unet4-p32.onnx"],
                       {"dicom_output": {"per_blob_segments": True}})
    run = run_ok(work / "regions", "--pipeline", cfg, "--case", CASE_DIR,
                 "--write-source-dicom", "--deterministic", "--threads", "2")
    expected = region_masks(run)
    assert len(expected) > 3 and all(m.any() for m in expected.values())
    series = written_series(run)
    seg = run.out / "seg.dcm"
    assert ohif_candidates(seg, series) == ["t2f"]
    problems = ohif_problems(run, seg, series["t2f"], work / "ohif-regions", expected)
    assert not problems, "\n".join(problems)
    grid = lps_affine(run.img("labels").affine)
    slicer = dcmqi_masks(seg, work / "dcmqi-regions")
    assert sorted(slicer) == sorted(expected)
    for n, (arr, aff) in slicer.items():
        got = into_grid(arr, aff, grid, run.img("labels").shape) != 0
        assert np.array_equal(got, expected[n]), f"dcmqi: segment {n} differs"
