"""Noise statistics through a linear model, where they are known in closed form.

conv3.onnx is one 3x3x3 convolution (4 -> 1 channels, zero padding 1, no bias) with weights w.
With crop disabled and noise_region volume, pass p sees x + sigma * e_p (e_p iid N(0, 1) per
voxel and channel), so its output is conv(x) + sigma * conv(e_p).  Away from the volume border
(>= 2 voxels) the output's noise has variance sigma^2 ||w||^2, up to the sliding window: a
voxel on a window's edge loses the taps that fall outside that window (the model zero-pads),
weighted by the (tiny) Gaussian importance of that window.  The exact per-voxel variance is
computed here (reference.axis_coverage) and used for the tight check; the window effect on
the RMS is also reported.

Sampling tolerance: std_logits^2 is the sample variance s^2 with K - 1 degrees of freedom;
E[s^2] = V, Var(s^2) = 2 V^2 / (K - 1).  Neighbouring outputs are correlated (correlation
rho(D) = autocorrelation of w / ||w||^2, nonzero for |D| <= 2 per axis), and s^2 at two voxels
has correlation rho^2, so the mean over N voxels of s^2 / V has relative standard deviation
sqrt(2 S / ((K - 1) N)) with S = sum_D rho(D)^2 (S ~ 5.8 here).  The checks allow 5 of these.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from scipy import ndimage, signal

import reference
from conftest import NOCROP, brain_mask, case_args, model_path, run_ok, write_config

K = 20
SIGMA = 0.5
Z_SD = 5.0


def conv3_weights() -> np.ndarray:
    """w[c, dz, dy, dx] read from the ONNX file, checked against the formula documented in
    tests/fixtures/models/make_models.py."""
    m = onnx.load(str(model_path("conv3.onnx")))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    assert len(inits) == 1, list(inits)
    w = next(iter(inits.values())).astype(np.float64)
    assert w.shape == (1, 4, 3, 3, 3)
    c, dz, dy, dx = np.meshgrid(range(4), range(3), range(3), range(3), indexing="ij")
    documented = ((c + 1) * (dz - 1) + 0.5 * (dy + 1) - 0.25 * dx) / 10.0
    np.testing.assert_allclose(w[0], documented, atol=1e-7)
    return w[0]


def expected_variance(w: np.ndarray, shape_zyx, patch=(16, 32, 32), sigma=SIGMA) -> np.ndarray:
    """Exact per-voxel variance of the stitched output noise, [z, y, x]."""
    fz, fy, fx = (reference.axis_coverage(s, p) for s, p in zip(shape_zyx, patch))
    w2 = (w ** 2).sum(axis=0)  # [dz, dy, dx]
    return sigma ** 2 * np.einsum("abc,az,by,cx->zyx", w2, fz ** 2, fy ** 2, fx ** 2)


def correlation_factor(w: np.ndarray) -> float:
    rho = sum(signal.correlate(w[c], w[c], mode="full") for c in range(w.shape[0]))
    rho = rho / (w ** 2).sum()
    return float((rho ** 2).sum())


@pytest.fixture(scope="module")
def stochastic_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("conv3")
    cfg = write_config(d / "conv3.yaml", [model_path("conv3.onnx")],
                       {**NOCROP, "ensemble": {"mode": "stochastic", "passes": K,
                                               "sigma": SIGMA, "noise_region": "volume",
                                               "seed": 11}})
    return run_ok(d / "out", "--pipeline", cfg, *case_args())


def test_spread_matches_sigma_times_weight_norm(stochastic_run):
    r = stochastic_run
    e = r.report["ensemble"]
    assert (e["passes_per_model"], e["total_passes"], e["noise_region"]) == (K, K, "volume")
    assert math.isclose(e["sigma"], SIGMA, rel_tol=1e-6)
    w = conv3_weights()
    wnorm = float(np.linalg.norm(w))
    std = r.map("std_logits").astype(np.float64).transpose(2, 1, 0)  # [z, y, x]
    var_exact = expected_variance(w, std.shape)
    interior = (slice(2, -2),) * 3
    n = std[interior].size
    sd_rel = math.sqrt(2 * correlation_factor(w) / ((K - 1) * n))

    ratio = (std[interior] ** 2).mean() / var_exact[interior].mean()
    rms = math.sqrt((std[interior] ** 2).mean())
    window_bias = math.sqrt(var_exact[interior].mean()) / (SIGMA * wnorm) - 1
    print(f"\nconv3: ||w|| = {wnorm:.6f}; interior RMS std {rms:.5f} vs sigma*||w|| "
          f"{SIGMA * wnorm:.5f} (ratio {rms / (SIGMA * wnorm):.5f}; window effect "
          f"{window_bias:+.2e}); mean s^2 / exact variance {ratio:.5f} +- {sd_rel:.5f} (1 sd)")
    assert abs(ratio - 1) <= Z_SD * sd_rel, (
        f"mean sample variance / expected = {ratio:.5f}, allowed 1 +- {Z_SD * sd_rel:.5f}")
    # the plain sigma * ||w|| law, allowing for the computed window effect
    assert abs(rms / (SIGMA * wnorm) - 1) <= Z_SD * sd_rel / 2 + abs(window_bias)

    # per voxel, s^2 (K - 1) / V is chi-square(K - 1); no voxel may be wildly off
    q = (std[interior] ** 2) * (K - 1) / var_exact[interior]
    assert q.min() > 0.5 and q.max() < 100, (q.min(), q.max())


def test_mean_matches_noise_free_run(stochastic_run, runs):
    """mean_logits - deterministic logits is the mean of K noise outputs: N(0, V / K)."""
    r, det = stochastic_run, runs.get("conv3_det")
    w = conv3_weights()
    diff = (r.map("mean_logits").astype(np.float64)
            - det.map("mean_logits").astype(np.float64)).transpose(2, 1, 0)
    var_mean = expected_variance(w, diff.shape) / K
    assert np.all(var_mean > 0)
    z = diff / np.sqrt(var_mean)
    # max over ~5e5 voxels of |N(0,1)|: 6.5 sd has a total false-alarm chance ~ 4e-5
    assert np.abs(z).max() < 6.5, f"max |z| {np.abs(z).max():.2f}"
    interior = (slice(2, -2),) * 3
    n = z[interior].size
    sd = math.sqrt(2 * correlation_factor(w) / n)
    msq = (z[interior] ** 2).mean()
    print(f"\nconv3 mean: mean z^2 {msq:.4f} +- {sd:.4f}, mean z {z[interior].mean():+.4f}")
    assert abs(msq - 1) <= Z_SD * sd, f"mean z^2 = {msq:.4f}, expected 1 +- {Z_SD * sd:.4f}"
    # the mean of z is N(0, sum(rho) / N); sum(rho) <= 27, so 5 sd is < 5 sqrt(27 / N)
    assert abs(z[interior].mean()) <= Z_SD * math.sqrt(27 / n)


def test_noise_region_brain(tmp_path, channels):
    """noise_region brain: no spread where no brain voxel is within the kernel's reach, the
    full sigma ||w|| law deep inside the brain."""
    kk = 4
    cfg = write_config(tmp_path / "conv3b.yaml", [model_path("conv3.onnx")],
                       {**NOCROP, "ensemble": {"passes": kk, "sigma": SIGMA,
                                               "noise_region": "brain", "seed": 3}})
    r = run_ok(tmp_path / "out", "--pipeline", cfg, *case_args())
    assert r.report["ensemble"]["noise_region"] == "brain"
    std = r.map("std_logits").astype(np.float64)  # (i, j, k)
    brain = brain_mask(channels)
    reach = ndimage.binary_dilation(brain, ndimage.generate_binary_structure(3, 3))
    assert np.all(std[~reach] == 0), f"{int((std[~reach] != 0).sum())} voxels with spread " \
                                     f"outside the kernel's reach of the brain"
    assert np.all(std[brain] > 0)
    deep = ndimage.binary_erosion(brain, ndimage.generate_binary_structure(3, 3))
    w = conv3_weights()
    var_exact = expected_variance(w, std.shape[::-1]).transpose(2, 1, 0)
    n = int(deep.sum())
    sd_rel = math.sqrt(2 * correlation_factor(w) / ((kk - 1) * n))
    ratio = (std[deep] ** 2).mean() / var_exact[deep].mean()
    assert abs(ratio - 1) <= Z_SD * sd_rel, (ratio, sd_rel)
