"""DICOM series input: the same case written as DICOM (by pydicom, tests/fixtures/dicom/
make_series.py) must give the same results as the NIfTI case, in patient coordinates, and broken
series must be refused with exit code 3 and one line naming the folder and the problem.

Every run here is deterministic with the small unet-p32 model, so results must agree exactly up
to float rounding: same blobs (voxels, mean_logit within 1e-4, centroid_mm within 1e-3 mm) and
the same label map once both are put in patient space. The DICOM-derived grid is also checked
against an affine computed here from pydicom's reading of the headers (an independent reader).
"""

from __future__ import annotations

import importlib.util
import json
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
    MAPS,
    error_line,
    load_nifti,
    model_path,
    require,
    run_ok,
    stochseg,
    write_config,
)

MAKE_SERIES = FIXTURES / "dicom" / "make_series.py"
GOOD = ["shuffled", "nonmonotonic", "two-series", "oblique", "flip-rows", "flip-ras",
        "implicit", "deflated", "rle", "j2k"]
# variant -> words the error line must contain (besides the t1n folder)
BAD = {
    "bad-missing-slice": ["slice missing between", "spacing 1.000 mm"],
    "bad-duplicate-position": ["duplicate slice position", "duplicate.dcm"],
    "bad-uneven-spacing": ["slice spacing is not uniform", "gap of"],
    "bad-mixed-orientation": ["mixed orientations", "ImageOrientationPatient"],
    "bad-mixed-size": ["mixed image sizes"],
    "bad-no-pixel-data": ["no pixel data"],
    "bad-jpeg-ls": ["1.2.840.10008.1.2.4.80", "JPEG-LS", "cannot be decoded"],
    "bad-rgb": ["photometric interpretation RGB"],
    "bad-enhanced": ["multi-frame"],
    "bad-truncated": ["cannot read"],
    "bad-non-image": ["no DICOM image series found", "SR"],
    "bad-empty": ["no DICOM image series found", "no files"],
    "bad-ambiguous": ["channel t1n", "2 series match", "AX T1 pre repeat", "(48 files)"],
}


def _maker():
    spec = importlib.util.spec_from_file_location("make_series", require(MAKE_SERIES))
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_series"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


MAKER = None


def maker():
    global MAKER
    if MAKER is None:
        MAKER = _maker()
    return MAKER


def model_args():
    return ["--model", model_path("unet-p32"), "--deterministic", "--threads", "2"]


class Series:
    """Generated DICOM variants, each written once per session."""

    def __init__(self, root: Path):
        self.root = root
        self.cache: dict = {}

    def get(self, variant: str, layout: str = "per-channel", channels=CHANNELS) -> dict:
        key = (variant, layout, tuple(channels))
        if key not in self.cache:
            out = self.root / f"{variant}-{layout}-{len(channels)}"
            self.cache[key] = maker().make_case(CASE_DIR, out, variant, layout, tuple(channels))
        return self.cache[key]


@pytest.fixture(scope="session")
def series(tmp_path_factory) -> Series:
    return Series(tmp_path_factory.mktemp("dicom-series"))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dicom-runs")


@pytest.fixture(scope="module")
def nifti_run(runs_dir):
    return run_ok(runs_dir / "nifti", *model_args(), "--case", CASE_DIR, "-v")


def input_args(meta: dict, plain: dict | None = None) -> list:
    """--input per channel: the variant's folder where it has one, else the plain series'."""
    args = []
    for c in CHANNELS:
        source = meta["channels"].get(c) or plain["channels"][c]
        args += ["--input", f"{c}={source['folder']}"]
    return args


# --------------------------------------------------------------------------------------------
# independent checks
# --------------------------------------------------------------------------------------------
def lps_of(img) -> np.ndarray:
    a = np.array(img.affine, dtype=np.float64)
    a[:2, :] *= -1.0
    return a


def pydicom_grid(folder: Path, series_uid: str):
    """(shape_ijk, LPS affine) of a series as read here with pydicom and numpy."""
    headers = []
    for p in sorted(Path(folder).rglob("*")):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        if ds.get("SeriesInstanceUID") == series_uid:
            headers.append(ds)
    iop = np.array(headers[0].ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    headers.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    pos = np.array([d.ImagePositionPatient for d in headers], dtype=float)
    along = pos @ normal
    spacing = (along[-1] - along[0]) / (len(headers) - 1)
    dy, dx = (float(v) for v in headers[0].PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = row * dx, col * dy, normal * spacing
    affine[:3, 3] = pos[0]
    shape = [int(headers[0].Columns), int(headers[0].Rows), len(headers)]
    return shape, affine


def report_affine(run) -> np.ndarray:
    return np.array(run.report["case"]["geometry"]["affine_lps"], dtype=float)


def match_blobs(dicom_run, nifti_run, world=np.eye(4)) -> dict:
    """DICOM blob id -> NIfTI blob id; asserts both find the same blobs in patient space."""
    a, b = dicom_run.report["blobs"], nifti_run.report["blobs"]
    assert len(a) == len(b) > 0, (len(a), len(b))
    pairs = {}
    for x in a:
        def moved(y):
            return world[:3, :3] @ np.array(y["centroid_mm"]) + world[:3, 3]
        same = [y for y in b if y["voxels"] == x["voxels"]
                and np.allclose(moved(y), x["centroid_mm"], atol=1e-3, rtol=0)]
        assert len(same) == 1, f"blob {x['id']} ({x['voxels']} voxels at {x['centroid_mm']}) " \
                               f"has {len(same)} counterparts in the NIfTI run"
        y = same[0]
        assert abs(x["mean_logit"] - y["mean_logit"]) <= 1e-4, (x["mean_logit"], y["mean_logit"])
        pairs[x["id"]] = y["id"]
    assert sorted(pairs.values()) == sorted(y["id"] for y in b)
    return pairs


def check_labels_in_patient_space(dicom_run, nifti_run, pairs: dict, world=np.eye(4)):
    """labels.nii.gz of both runs, mapped voxel by voxel through patient space, agree."""
    d_img, n_img = dicom_run.img("labels"), nifti_run.img("labels")
    d_lab, n_lab = np.asarray(d_img.dataobj), np.asarray(n_img.dataobj)
    to_nifti = np.linalg.inv(lps_of(n_img)) @ np.linalg.inv(world) @ lps_of(d_img)
    assert np.allclose(to_nifti, np.round(to_nifti), atol=1e-3), to_nifti
    m = np.round(to_nifti).astype(int)
    idx = np.indices(d_lab.shape).reshape(3, -1)
    mapped = m[:3, :3] @ idx + m[:3, 3:4]
    assert (mapped >= 0).all() and all((mapped[a] < n_lab.shape[a]).all() for a in range(3))
    lut = np.zeros(max(pairs) + 1, dtype=np.int64)
    for d_id, n_id in pairs.items():
        lut[d_id] = n_id
    expected = n_lab[mapped[0], mapped[1], mapped[2]]
    got = lut[d_lab.reshape(-1)]
    assert np.array_equal(got, expected), f"{int((got != expected).sum())} voxels differ"


def check_no_patient_data(*texts: str) -> None:
    for text in texts:
        for value in maker().FAKE_PATIENT.values():
            if len(value) > 1:
                assert value not in text, f"patient attribute {value!r} leaked"


def check_matches_nifti(run, nifti_run, meta: dict) -> None:
    world = np.array(meta["channels"]["t1n"]["world_transform_lps"])
    pairs = match_blobs(run, nifti_run, world)
    check_labels_in_patient_space(run, nifti_run, pairs, world)
    check_no_patient_data(run.proc.stderr, (run.out / "report.json").read_text())


def check_grid(run, meta: dict, channel: str = "t1n") -> None:
    s = meta["channels"][channel]
    shape, affine = pydicom_grid(Path(s["folder"]), s["series_instance_uid"])
    geometry = run.report["case"]["geometry"]
    assert geometry["shape_ijk"] == shape
    np.testing.assert_allclose(report_affine(run), affine, atol=1e-4, rtol=0)
    np.testing.assert_allclose(report_affine(run), np.array(s["expected_affine_lps"]),
                               atol=1e-4, rtol=0)
    # labels.nii.gz carries the same grid (stored as float32 in the sform)
    np.testing.assert_allclose(lps_of(run.img("labels")), affine, atol=1e-3, rtol=0)


def assert_same_maps(run, nifti_run) -> None:
    """The same voxels on the same grid give the same maps, value for value."""
    for name in MAPS:
        d = np.abs(run.map(name).astype(np.float64) - nifti_run.map(name)).max()
        assert d == 0, f"{name}: DICOM vs NIfTI input, max |diff| {d:.3g}"


# --------------------------------------------------------------------------------------------
# good variants
# --------------------------------------------------------------------------------------------
def test_plain_series_gives_the_nifti_result(series, runs_dir, nifti_run):
    meta = series.get("plain")
    run = run_ok(runs_dir / "plain", *model_args(), *input_args(meta), "-v")
    # same grid as the NIfTI case, to 1e-4 mm
    assert run.report["case"]["geometry"]["shape_ijk"] == \
        nifti_run.report["case"]["geometry"]["shape_ijk"]
    np.testing.assert_allclose(report_affine(run), report_affine(nifti_run), atol=1e-4, rtol=0)
    check_grid(run, meta)
    check_matches_nifti(run, nifti_run, meta)
    # same voxels on the same grid: the same maps, value for value
    assert_same_maps(run, nifti_run)
    inputs = {e["channel"]: e["path"] for e in run.report["case"]["inputs"]}
    assert inputs == {c: meta["channels"][c]["folder"] for c in CHANNELS}
    assert "DICOM series" in run.proc.stderr


@pytest.mark.parametrize("variant", GOOD)
def test_variant_gives_the_nifti_result(series, runs_dir, nifti_run, variant):
    meta = series.get(variant)
    run = run_ok(runs_dir / variant, *model_args(), *input_args(meta), "-v")
    check_grid(run, meta)
    check_matches_nifti(run, nifti_run, meta)


def test_case_folder_of_dicom_series(series, runs_dir, nifti_run):
    """--case DIR without NIfTI files: the four series in one folder, chosen by the built-in
    rules on SeriesDescription."""
    meta = series.get("shuffled", layout="flat")
    folder = Path(meta["channels"]["t1n"]["folder"])
    run = run_ok(runs_dir / "flat", *model_args(), "--case", folder, "-v")
    check_matches_nifti(run, nifti_run, meta)
    for c in CHANNELS:
        assert meta["channels"][c]["series_instance_uid"] in run.proc.stderr
    assert run.report["case"]["id"] == folder.name


def test_channels_from_nifti_and_dicom_mixed(series, runs_dir, nifti_run):
    meta = series.get("plain")
    args = []
    for c in CHANNELS:
        path = meta["channels"][c]["folder"] if c in ("t1n", "t2f") else \
            CASE_DIR / f"{CASE_ID}-{c}.nii.gz"
        args += ["--input", f"{c}={path}"]
    run = run_ok(runs_dir / "mixed", *model_args(), *args)
    check_matches_nifti(run, nifti_run, meta)
    assert_same_maps(run, nifti_run)


def test_a_config_rule_resolves_an_ambiguous_folder(series, runs_dir, nifti_run, tmp_path):
    bad = series.get("bad-ambiguous", channels=("t1n",))
    plain = series.get("plain")
    cfg = write_config(tmp_path / "rule.yaml", [model_path("unet-p32")],
                       {"dicom": {"series": {"t1n": {"series_number": "^3$"}}}})
    run = run_ok(runs_dir / "ambiguous-rule", "--pipeline", cfg, "--deterministic",
                 "--threads", "2", *input_args(bad, plain))
    check_matches_nifti(run, nifti_run, plain)


def test_series_of_a_folder_are_listed_when_none_matches(series, tmp_path):
    meta = series.get("shuffled", layout="flat")
    folder = Path(meta["channels"]["t1n"]["folder"])
    cfg = write_config(tmp_path / "rule.yaml", [model_path("unet-p32")],
                       {"dicom": {"series": {"t2f": {"series_description": "^SAG"}}}})
    out = tmp_path / "out"
    proc = stochseg("run", "--pipeline", cfg, "--deterministic", "--case", folder, "--out", out)
    assert proc.returncode == 3, proc.stderr
    line = error_line(proc)
    assert str(folder) in line and "channel t2f: no series matches" in line, line
    for c in CHANNELS:
        s = meta["channels"][c]
        assert f'{s["series_instance_uid"]} "{s["series_description"]}" ' \
               f'#{s["series_number"]} (48 files)' in line, line
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# bad variants
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(BAD))
def test_bad_series_is_refused(series, tmp_path, variant):
    bad = series.get(variant, channels=("t1n",))
    plain = series.get("plain")
    out = tmp_path / "out"
    proc = stochseg("run", *model_args(), *input_args(bad, plain), "--out", out)
    assert proc.returncode == 3, f"exit {proc.returncode}\n{proc.stderr}"
    line = error_line(proc)
    folder = bad["channels"]["t1n"]["folder"]
    assert line.startswith(f"stochseg: error: {folder}"), line
    for word in BAD[variant]:
        assert word in line, f"{word!r} not in {line!r}"
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], \
        list(tmp_path.iterdir())
    check_no_patient_data(proc.stderr)


@pytest.mark.parametrize("damage", ["header", "pixels"])
def test_of_several_broken_files_the_first_is_named_every_time(series, tmp_path, damage):
    """Two broken files in one series (the header cut, so the scan fails; or no pixel data, so
    reading the voxels fails): the error names the first (in name order for the scan, in slice
    order for the voxels: the same order in this series), run after run, whichever thread meets
    its file first."""
    plain = series.get("plain")
    folder = tmp_path / "t1n"
    folder.mkdir()
    for f in sorted(Path(plain["channels"]["t1n"]["folder"]).iterdir()):
        (folder / f.name).write_bytes(f.read_bytes())
    files = sorted(folder.iterdir())
    # the first late in the first half, the second where a second thread starts (the middle)
    half = len(files) // 2
    broken = [files[half - 3], files[half]]
    for f in broken:
        if damage == "header":
            f.write_bytes(f.read_bytes()[:400])
        else:
            ds = pydicom.dcmread(f)
            del ds.PixelData
            ds.save_as(f)
    meta = {"channels": {"t1n": {"folder": str(folder)}}}
    lines = set()
    for i in range(4):
        out = tmp_path / f"out{i}"
        proc = stochseg("run", *model_args(), *input_args(meta, plain), "--out", out)
        assert proc.returncode == 3, proc.stderr
        lines.add(error_line(proc))
        assert not out.exists()
    assert len(lines) == 1, lines
    line = lines.pop()
    assert str(broken[0]) in line and str(broken[1]) not in line, line


def test_dicom_rules_in_the_config_are_checked(tmp_path):
    problems = {
        "bad-regex": ({"t1n": {"series_description": "(unclosed"}},
                      "/dicom/series/t1n/series_description"),
        "unknown-channel": ({"adc": {"series_description": "ADC"}}, "/dicom/series/adc"),
        "unknown-key": ({"t1n": {"description": "T1"}}, "description"),
    }
    for name, (rules, expected) in problems.items():
        cfg = write_config(tmp_path / f"{name}.yaml", [model_path("unet-p32")],
                           {"dicom": {"series": rules}})
        proc = stochseg("validate", "--pipeline", cfg)
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{proc.stderr}"
        assert expected in error_line(proc), (name, proc.stderr)


def test_generator_writes_what_it_says(series):
    """The fixture generator itself: stored values come back through pydicom's rescale."""
    meta = series.get("plain")
    img = load_nifti(CASE_DIR / f"{CASE_ID}-t1c.nii.gz")
    data = np.asanyarray(img.dataobj)
    files = meta["channels"]["t1c"]["files"]
    ds = pydicom.dcmread(files[17])
    values = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(values, data[:, :, 17].T)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert list(ds.ImageType[:2]) == ["ORIGINAL", "PRIMARY"]
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert json.loads((Path(meta["channels"]["t1c"]["folder"]).parent / "series.json")
                      .read_text())["variant"] == "plain"


def test_dicom_and_nifti_channels_on_different_grids_are_refused(series, tmp_path):
    meta = series.get("oblique")
    args = ["--input", f"t1n={meta['channels']['t1n']['folder']}"]
    for c in CHANNELS[1:]:
        args += ["--input", f"{c}={CASE_DIR / f'{CASE_ID}-{c}.nii.gz'}"]
    out = tmp_path / "out"
    proc = stochseg("run", *model_args(), *args, "--out", out)
    assert proc.returncode == 3, proc.stderr
    line = error_line(proc)
    assert "channel t1c is on a different grid than" in line, line
    assert meta["channels"]["t1n"]["folder"] in line, line
    assert not out.exists()


def test_a_reader_panic_on_a_hostile_file_is_one_quiet_error_line(tmp_path):
    """fuzz/regressions/dicom_series/panic-rle-decode (found by the fuzzer): RLE pixel data that
    makes dicom-rs's decoder panic. The run is refused with exit 3 and one error line naming the
    file; the caught panic prints nothing (no 'panicked at' on stderr). A one-channel pipeline
    with a one-channel model reaches the pixel data without a second series."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "D", "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "D", "H", "W"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "one", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "one.onnx"))
    folder = tmp_path / "t1n"
    folder.mkdir()
    data = (FIXTURES.parent.parent / "fuzz" / "regressions" / "dicom_series"
            / "panic-rle-decode").read_bytes()
    for i, part in enumerate(data.split(b"\n--stochseg-fuzz-next-file--\n")):
        (folder / f"{i:03}.dcm").write_bytes(part)
    cfg = write_config(tmp_path / "one.yaml",
                       [{"path": str(tmp_path / "one.onnx"), "patch_size": [16, 32, 32]}],
                       {"channels": ["t1n"], "ensemble": {"mode": "deterministic"}})
    out = tmp_path / "out"
    proc = stochseg("run", "--pipeline", cfg, "--input", f"t1n={folder}", "--out", out)
    assert proc.returncode == 3, proc.stderr
    line = error_line(proc)
    assert "the DICOM reader failed on this file" in line and str(folder) in line, line
    assert "panicked" not in proc.stderr, proc.stderr
    assert not out.exists()
