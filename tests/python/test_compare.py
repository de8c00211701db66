"""`--compare-deterministic` and `blobs.decisions` (issue 8, items 1 and 2).

One stochastic run of unet-p64 with the deterministic comparison is checked against the shared
separate `--deterministic` run of the same model (``det_crop_p64``): the comparison's case-level
statistics must equal that run's, and each stochastic blob's deterministic confidence must equal
the mean, computed here with numpy, of that run's mean_logits over the stochastic blob's voxels.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import (brain_mask, case_args, error_line, model_path, run_ok, stochseg,
                      write_config)

DECISIONS = {"accept": 11.9, "reject": 5.0}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    cfg = write_config(root / "cfg.yaml", [model_path("unet-p64")],
                       {"blobs": {"threshold": 0.0, "decisions": DECISIONS},
                        "dicom_output": {"per_blob_segments": True, "seg_blobs": "accepted"}})
    return run_ok(root / "out", "--pipeline", cfg, *case_args(), "--passes", "2", "--seed", "0",
                  "--compare-deterministic", "--figures")


@pytest.fixture(scope="module")
def det(runs):
    return runs.get("det_crop_p64")


def close(a, b, tol=1e-5):
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def test_statistics_equal_a_separate_deterministic_run(compared, det, channels):
    c = compared.report["comparison"]["deterministic"]
    assert c["passes_per_model"] == 1 and c["sigma"] == 0
    mine, theirs = c["statistics"], det.report["statistics"]
    assert mine["brain_voxels"] == theirs["brain_voxels"]
    assert mine["positive_voxels"] == theirs["positive_voxels"]
    for region in ("brain", "positive"):
        for key in ("count", "mean", "std", "skewness", "excess_kurtosis"):
            assert close(mine[region][key], theirs[region][key]), (region, key)
    # same bins as the stochastic run, counts as numpy gives them from the deterministic map
    edges = compared.report["statistics"]["brain"]["histogram"]["edges"]
    assert mine["brain"]["histogram"]["edges"] == edges
    assert mine["positive"]["histogram"]["edges"] == edges
    logits = det.map("mean_logits")
    brain = logits[brain_mask(channels)]
    positive = logits[logits > 0.0]
    for values, region in ((brain, "brain"), (positive, "positive")):
        counts, _ = np.histogram(values, bins=np.asarray(edges))
        got = np.asarray(mine[region]["histogram"]["counts"])
        # a value within f32 rounding of an edge may fall on either side
        assert np.abs(got - counts).sum() <= 2, (region, got, counts)
    # the deterministic model's own statistics are those of the one pass (f16 copies)
    (model_stats,) = c["model_statistics"].values()
    assert model_stats["count"] == mine["brain_voxels"]
    assert abs(model_stats["mean"] - mine["brain"]["mean"]) < 1e-2
    assert c["blobs_found"] == len(det.report["blobs"])


def test_blob_confidences_under_the_deterministic_ensemble(compared, det):
    labels = compared.map("labels")
    det_logits = det.map("mean_logits")
    blobs = compared.report["blobs"]
    rows = compared.report["comparison"]["blobs"]
    assert [r["id"] for r in rows] == [b["id"] for b in blobs]
    assert len(rows) >= 1
    for row, blob in zip(rows, blobs):
        voxels = labels == row["id"]
        assert row["voxels"] == blob["voxels"] == int(voxels.sum())
        assert row["stochastic_mean_logit"] == blob["mean_logit"]
        assert row["stochastic_pass_agreement"] == blob["pass_agreement"]
        expected = float(det_logits[voxels].astype(np.float64).mean())
        assert close(row["deterministic_mean_logit"], expected), (row, expected)
        # one model, one noise-free pass: its mean is the ensemble's (f16 copy), and it agrees
        # exactly when that mean is above the threshold
        (model_mean,) = row["deterministic_model_mean_logits"].values()
        assert abs(model_mean - expected) < 1e-2 * max(1.0, abs(expected))
        assert row["deterministic_pass_agreement"] == (1.0 if model_mean > 0 else 0.0)


def decide(confidence: float) -> str:
    if confidence >= DECISIONS["accept"]:
        return "accept"
    if confidence < DECISIONS["reject"]:
        return "reject"
    return "review"


def test_decisions_follow_the_thresholds(compared, det):
    r = compared.report
    assert r["thresholds"]["decisions"] == DECISIONS
    for b in r["blobs"]:
        assert b["decision"] == decide(b["mean_logit"])
    for row in r["comparison"]["blobs"]:
        assert row["stochastic_decision"] == decide(row["stochastic_mean_logit"])
        assert row["deterministic_decision"] == decide(row["deterministic_mean_logit"])
    # without the setting, no decision is written
    assert "decisions" not in det.report["thresholds"]
    assert all("decision" not in b for b in det.report["blobs"])
    assert "comparison" not in det.report


def test_seg_carries_accepted_blobs_only(compared):
    import pydicom

    r = compared.report
    decisions = [b["decision"] for b in r["blobs"]]
    assert "accept" in decisions and set(decisions) != {"accept"}, decisions
    accepted = [b for b in r["blobs"] if b["decision"] == "accept"]
    segments = r["seg"]["binary"]["segments"]
    assert segments[0]["voxels"] == sum(b["voxels"] for b in accepted)
    assert [s.get("blob_id") for s in segments[1:]] == [b["id"] for b in accepted]
    for b in r["blobs"]:
        assert ("seg_segment_number" in b) == (b["decision"] == "accept")
    # the SEG's whole-tumor segment is the accepted blobs' voxels, frame by frame
    ds = pydicom.dcmread(compared.out / "seg.dcm")
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), ds.Rows, ds.Columns)
    numbers = [int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
               for f in ds.PerFrameFunctionalGroupsSequence]
    tumor = sum(int(fr.sum()) for fr, n in zip(frames, numbers) if n == 1)
    assert tumor == segments[0]["voxels"]
    labels = compared.map("labels")
    assert int(np.isin(labels, [b["id"] for b in accepted]).sum()) == tumor


def read_png(path):
    """An 8-bit RGB PNG as a (height, width, 3) array, decoded here with zlib and the PNG
    filters (not with the writer's library)."""
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = header[:4]
    assert (depth, colour) == (8, 2), header  # 8-bit RGB
    raw = zlib.decompress(idat)
    stride = 3 * width
    out = np.zeros((height, stride), dtype=np.int32)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], np.frombuffer(
            raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        up = out[y - 1] if y else np.zeros(stride, np.int32)
        if kind in (0, 2):
            out[y] = (line + (up if kind == 2 else 0)) % 256
            continue
        row = np.zeros(stride, np.int32)
        for x in range(stride):
            a = row[x - 3] if x >= 3 else 0
            b, c = up[x], (up[x - 3] if x >= 3 else 0)
            if kind == 1:
                pred = a
            elif kind == 3:
                pred = (a + b) // 2
            else:  # Paeth
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            row[x] = (line[x] + pred) % 256
        out[y] = row
    return out.reshape(height, width, 3).astype(np.uint8)


def has_colour(img, rgb):
    return bool((img == np.asarray(rgb, np.uint8)).all(axis=2).any())


BLUE, ORANGE, RED, WHITE, BLACK = (31, 119, 180), (255, 127, 14), (255, 40, 40), (255,) * 3, (0,) * 3


def test_figures(compared):
    r = compared.report
    figures = [o for o in r["outputs"] if o.startswith("figures/")]
    expected = ["figures/logit-histogram.png", "figures/uncertainty-histogram.png"] + [
        f"figures/blob-{b['id']}.png" for b in r["blobs"][:3]]
    assert figures == expected
    # one histogram panel (720 x 220) for the ensemble and one per model
    hist = read_png(compared.out / figures[0])
    assert hist.shape == (220 * (1 + len(r["model_statistics"])), 720, 3)
    for panel in range(hist.shape[0] // 220):
        bars = hist[panel * 220:(panel + 1) * 220]
        assert has_colour(bars, BLUE) and has_colour(bars, ORANGE), panel
    # five uncertainty panels (entropy, expected entropy, mutual information, the between- and
    # within-model variance), both ensembles beside each other but for the within-model
    # variance, which the deterministic ensemble does not have (all in its first bin)
    unc = read_png(compared.out / figures[1])
    assert unc.shape == (220 * 5, 720, 3)
    for panel in range(4):
        bars = unc[panel * 220:(panel + 1) * 220]
        assert has_colour(bars, BLUE) and has_colour(bars, ORANGE), panel
    # an overlay is the crop's axial plane once per channel and once for the spread, s pixels a
    # voxel, 4 pixels between panels
    crop = r["preprocess"]["crop_canonical_zyx"]
    ny = crop["end_zyx"][1] - crop["start_zyx"][1]
    nx = crop["end_zyx"][2] - crop["start_zyx"][2]
    s = min(max(512 // max(ny, nx), 1), 4)
    panels = len(r["case"]["inputs"]) + 1
    for f in figures[2:]:
        img = read_png(compared.out / f)
        assert img.shape == (s * ny, panels * s * nx + (panels - 1) * 4, 3), f
        assert has_colour(img, RED)  # the blob's outline and its tag
        for k in range(panels):
            # the panel's name: white glyph pixels on a black box in its top-left corner
            corner = img[:18, k * (s * nx + 4):k * (s * nx + 4) + 30]
            assert has_colour(corner, WHITE) and has_colour(corner, BLACK), (f, k)


def test_model_statistics(compared):
    """One model: the mean of its passes is the ensemble (up to the f16 pass copies), and its
    noise-free pass is the deterministic ensemble."""
    r = compared.report
    (name, mine), = r["model_statistics"].items()
    ens = r["statistics"]["brain"]
    assert mine["histogram"]["edges"] == ens["histogram"]["edges"]
    assert mine["count"] == ens["count"]
    assert close(mine["mean"], ens["mean"], 1e-3)
    diff = np.abs(np.asarray(mine["histogram"]["counts"]) - ens["histogram"]["counts"]).sum()
    assert diff <= 0.01 * ens["count"], diff
    assert list(r["comparison"]["deterministic"]["model_statistics"]) == [name]


@pytest.mark.parametrize("extra,args,needle", [
    ({}, ["--deterministic", "--compare-deterministic"], "deterministic"),
    ({"ensemble": {"mode": "deterministic", "compare_deterministic": True}}, [],
     "/ensemble/compare_deterministic"),
    ({"blobs": {"decisions": {"accept": 1.0, "reject": 2.0}}}, [], "/blobs/decisions"),
    ({"blobs": {"decisions": {"accept": 1.0}}}, [], "reject"),
    ({"dicom_output": {"seg_blobs": "accepted"}}, [], "/dicom_output/seg_blobs"),
])
def test_bad_settings_are_usage_errors(tmp_path, extra, args, needle):
    cfg = write_config(tmp_path / "cfg.yaml", [model_path("unet-p32")], extra)
    proc = stochseg("run", "--pipeline", cfg, *case_args(), *args, "--out", tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    assert needle in error_line(proc)
    assert not (tmp_path / "out").exists()


def test_figures_from_the_config_are_turned_off_by_a_flag(tmp_path):
    cfg = write_config(tmp_path / "fig.yaml",
                       [{"path": str(model_path("identity-plus-one.onnx")),
                         "patch_size": [16, 32, 32]}],
                       {"ensemble": {"mode": "deterministic"}, "outputs": {"figures": True}})
    on = run_ok(tmp_path / "on", "--pipeline", cfg, *case_args())
    assert (on.out / "figures" / "logit-histogram.png").is_file()
    off = run_ok(tmp_path / "off", "--pipeline", cfg, *case_args(), "--no-figures")
    assert not (off.out / "figures").exists()
    assert not [o for o in off.report["outputs"] if o.startswith("figures/")]
    both = stochseg("run", "--pipeline", cfg, *case_args(), "--figures", "--no-figures",
                    "--out", tmp_path / "both")
    assert both.returncode == 2, both.stderr
