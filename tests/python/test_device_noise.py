"""Noise on the device (`ensemble.noise_on: device`) on the CPU provider: its distribution,
where it applies, and its reproducibility, through identity-plus-one.onnx (output = first
channel + 1), so that each pass's stitched output is the stitched noise itself.

Device noise is drawn per patch: voxel v covered by windows j (Gaussian importance g_j(v))
gets independent draws e_j ~ N(0, sigma^2), stitched to sum_j g_j e_j / sum_j g_j, whose
variance is sigma^2 * q(v) with q(v) = sum_j g_j^2 / (sum_j g_j)^2. The importance is separable
and the windows a grid, so q is the product of one factor per axis, computed here from the
window rules (reference.window_starts, reference.gaussian_1d). Host noise gives every window the
same draw at v: variance sigma^2 (q = 1). Draws at different voxels are independent in both, so
the mean over N voxels of s^2 / (sigma^2 q) (s^2: sample variance over K passes) has relative
standard deviation sqrt(2 / ((K - 1) N)); the checks allow 6 of these.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference
from conftest import NOCROP, brain_mask, case_args, load_channels, model_path, run_ok, write_config

K = 12
SIGMA = 0.5
PATCH = (16, 32, 32)
Z_SD = 6.0


def axis_q(size: int, patch: int) -> np.ndarray:
    """sum_j g_j^2 / (sum_j g_j)^2 along one axis, for each position."""
    g = reference.gaussian_1d(patch)
    num, den = np.zeros(size), np.zeros(size)
    for s in reference.window_starts(size, patch, 0.5):
        num[s:s + patch] += g ** 2
        den[s:s + patch] += g
    return num / den ** 2


def expected_q(shape_ijk) -> np.ndarray:
    """q on the NIfTI grid: the model's x is the first array axis, y the second, z the third;
    the window layout is symmetric, so axis flips of the reorientation do not change it."""
    qx, qy, qz = (axis_q(s, p) for s, p in zip(shape_ijk, PATCH[::-1]))
    return np.einsum("i,j,k->ijk", qx, qy, qz)


def run(tmp, name, noise_on="device", region="volume", seed=3, passes=K, sigma=SIGMA):
    ensemble = {"mode": "stochastic", "passes": passes, "sigma": sigma,
                "noise_region": region, "noise_on": noise_on, "seed": seed}
    cfg = write_config(tmp / f"{name}.yaml",
                       [{"path": str(model_path("identity-plus-one.onnx")),
                         "patch_size": list(PATCH)}],
                       {**NOCROP, "ensemble": ensemble})
    return run_ok(tmp / name, "--pipeline", cfg, *case_args())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("device-noise")
    clean = run(tmp, "clean", noise_on="host", sigma=0.0, passes=1)
    return {
        "clean": clean,
        "device": run(tmp, "device"),
        "device-again": run(tmp, "device-again"),
        "device-seed": run(tmp, "device-seed", seed=4),
        "host": run(tmp, "host", noise_on="host"),
        "device-brain": run(tmp, "device-brain", region="brain", passes=3),
    }


def ratio_check(r, q, label):
    s2 = r.map("std_logits").astype(np.float64) ** 2
    expected = SIGMA ** 2 * q
    ratio = float((s2 / expected).mean())
    sd = math.sqrt(2.0 / ((K - 1) * s2.size))
    assert abs(ratio - 1.0) <= Z_SD * sd, f"{label}: mean s^2/(sigma^2 q) = {ratio:.5f} +- {sd:.1e}"
    return ratio


def test_report_records_device_noise(runs):
    e = runs["device"].report["ensemble"]
    assert (e["noise_on"], e["noise_region"], e["passes_per_model"]) == ("device", "volume", K)
    assert runs["host"].report["ensemble"]["noise_on"] == "host"


def test_device_noise_variance_is_sigma_squared_per_window(runs):
    shape = runs["device"].map("std_logits").shape
    q = expected_q(shape)
    assert 0.1 < q.min() and q.max() <= 1.0 + 1e-12
    ratio_check(runs["device"], q, "device")
    # the same statistic cannot pass with host noise's q = 1 (overlap halves the variance)
    s2 = runs["device"].map("std_logits").astype(np.float64) ** 2
    assert float((s2 / SIGMA ** 2).mean()) < 0.8


def test_host_noise_variance_is_sigma_squared(runs):
    shape = runs["host"].map("std_logits").shape
    ratio_check(runs["host"], np.ones(shape), "host")


def test_device_noise_is_centred_and_gaussian(runs):
    # the clean run's mean logit is the normalized first channel + 1 (deterministic identity)
    clean = runs["clean"].map("mean_logits").astype(np.float64)
    mean = runs["device"].map("mean_logits").astype(np.float64)
    q = expected_q(mean.shape)
    z = (mean - clean) / np.sqrt(SIGMA ** 2 * q / K)
    n = z.size
    assert abs(z.mean()) < Z_SD / math.sqrt(n), z.mean()
    # sd of the sample sd of n normals: 1 / sqrt(2 n)
    assert abs(z.std() - 1.0) < Z_SD / math.sqrt(2 * n), z.std()
    # tails of a normal: P(|z| > 3) = 0.0027
    tail = float((np.abs(z) > 3).mean())
    assert abs(tail - 0.0027) < Z_SD * math.sqrt(0.0027 / n), tail


def test_same_seed_same_bytes_other_seed_other_noise(runs):
    a, b, c = (runs[k].path("mean_logits").read_bytes()
               for k in ("device", "device-again", "device-seed"))
    assert a == b
    assert a != c


def test_brain_region_device_noise_leaves_the_background_alone(runs):
    r = runs["device-brain"]
    clean = runs["clean"].map("mean_logits")
    brain = brain_mask(load_channels())
    std = r.map("std_logits")
    assert brain.any() and (~brain).any()
    assert np.all(std[~brain] == 0), "noise outside the brain"
    np.testing.assert_array_equal(r.map("mean_logits")[~brain], clean[~brain])
    assert float((std[brain] > 0).mean()) > 0.99
