"""Patient data (issue 7): a run on a DICOM case whose series carry a known fake patient
(tests/fixtures/dicom/make_series.py's FAKE_PATIENT: name, ID, birth date, accession number) must
not put those values anywhere but the DICOM SEG, which has to reference the patient.

Searched: stderr and stdout of text logs at -vv and of JSON logs, every output file's bytes
(NIfTI maps decompressed, both reports), every output file and folder name, and the error lines
of runs that fail on damaged series. `seg.dcm` and `prob-seg.dcm` must hold the patient's name
and ID (read back with pydicom), and nothing else may.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pydicom
import pytest

from conftest import (CHANNELS, error_line, make_series_module, model_path, run_ok, stochseg,
                      write_config)

PATIENT = make_series_module().FAKE_PATIENT
IDENTIFIERS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")
SEG_FILES = ("seg.dcm", "prob-seg.dcm")


def needles() -> list[bytes]:
    """Each identifying value, its name components and the birth date as ISO date."""
    out = []
    for key in IDENTIFIERS:
        value = PATIENT[key]
        out.append(value)
        out += [part for part in value.split("^") if len(part) > 3]
    d = PATIENT["PatientBirthDate"]
    out.append(f"{d[:4]}-{d[4:6]}-{d[6:]}")
    return sorted({v.encode() for v in out})


NEEDLES = needles()


def leaks(data: bytes) -> list[str]:
    return [n.decode() for n in NEEDLES if n in data]


def file_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def check_outputs(out: Path, texts: dict[str, str]) -> None:
    """No identifier in `texts`, in any output name or output file but the SEGs; the SEGs
    reference the patient."""
    for what, text in texts.items():
        assert not leaks(text.encode()), f"{what} holds patient data: {leaks(text.encode())}"
    seen_seg = False
    for path in sorted(out.rglob("*")):
        rel = str(path.relative_to(out))
        assert not leaks(rel.encode()), f"output name {rel} holds patient data"
        if not path.is_file():
            continue
        if path.name in SEG_FILES:
            seen_seg = True
            ds = pydicom.dcmread(path)
            assert str(ds.PatientName) == PATIENT["PatientName"], rel
            assert ds.PatientID == PATIENT["PatientID"], rel
            continue
        found = leaks(file_bytes(path))
        assert not found, f"{rel} holds patient data: {found}"
    assert seen_seg, f"no seg.dcm in {out}"


@pytest.fixture(scope="module")
def flat_case(dicom_series) -> Path:
    """The four series in one folder (--case DIR, series chosen by the built-in rules)."""
    meta = dicom_series.get("shuffled", layout="flat")
    return Path(meta["channels"]["t1n"]["folder"])


def model_args():
    return ["--model", model_path("unet-p32"), "--passes", "1", "--threads", "2"]


def test_text_logs_reports_maps_and_names_hold_no_patient_data(dicom_series, tmp_path):
    meta = dicom_series.get("plain")
    cfg = write_config(tmp_path / "all-outputs.yaml", [model_path("unet-p32")],
                       {"dicom_output": {"per_blob_segments": True, "probability_seg": True}})
    inputs = []
    for c in CHANNELS:
        inputs += ["--input", f"{c}={meta['channels'][c]['folder']}"]
    run = run_ok(tmp_path / "out", "-vv", "--pipeline", cfg, "--passes", "1", "--threads", "2",
                 *inputs)
    assert "DICOM series" in run.proc.stderr  # the logs did talk about the series
    check_outputs(run.out, {"stderr": run.proc.stderr, "stdout": run.proc.stdout})
    assert (run.out / "prob-seg.dcm").is_file()


def test_json_logs_hold_no_patient_data(flat_case, tmp_path):
    run = run_ok(tmp_path / "out", "-v", "--log-format", "json", *model_args(),
                 "--case", flat_case)
    lines = [json.loads(line) for line in run.proc.stderr.splitlines() if line.strip()]
    assert any("DICOM series" in json.dumps(e) for e in lines)
    check_outputs(run.out, {"stderr": run.proc.stderr, "stdout": run.proc.stdout})
    # the case id comes from the folder's name, never from a DICOM attribute
    assert run.report["case"]["id"] == flat_case.name


def damaged_copy(meta: dict, tmp: Path, damage) -> tuple[list, Path]:
    """--input arguments with a copy of the t1n series damaged by `damage(files)`."""
    src = Path(meta["channels"]["t1n"]["folder"])
    folder = tmp / "t1n"
    folder.mkdir()
    files = []
    for f in sorted(src.iterdir()):
        (folder / f.name).write_bytes(f.read_bytes())
        files.append(folder / f.name)
    damage(files)
    args = ["--input", f"t1n={folder}"]
    for c in CHANNELS[1:]:
        args += ["--input", f"{c}={meta['channels'][c]['folder']}"]
    return args, folder


def cut_inside_patient_name(files):
    data = files[0].read_bytes()
    at = data.index(PATIENT["PatientName"].encode())
    files[0].write_bytes(data[: at + 5])


def wrong_length_patient_id(files):
    data = bytearray(files[1].read_bytes())
    at = data.index(PATIENT["PatientID"].encode())
    # the element's 2-byte length (explicit VR LO) just before the value: claim far too much
    data[at - 2: at] = (0xFFF0).to_bytes(2, "little")
    files[1].write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [cut_inside_patient_name, wrong_length_patient_id],
                         ids=lambda d: d.__name__)
def test_errors_on_damaged_series_hold_no_patient_data(dicom_series, tmp_path, damage):
    args, folder = damaged_copy(dicom_series.get("plain"), tmp_path, damage)
    out = tmp_path / "out"
    proc = stochseg("run", *model_args(), *args, "--out", out)
    assert proc.returncode == 3, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    line = error_line(proc)
    assert str(folder) in line, line
    found = leaks(proc.stderr.encode())
    assert not found, f"patient data in stderr: {found}\n{proc.stderr}"
    assert not out.exists()
