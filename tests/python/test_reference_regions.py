"""The reference's region rules (tests/python/reference.py) against brute force.

region_log_odds, brats_nested and brats_argmax are checked voxel by voxel against plain
Python loops on random arrays, the all-channel sliding window against the exact output of the
pointwise test models (a 1x1x1 convolution commutes with the window average).  These checks
need onnxruntime and the fixtures, not the binary.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import reference
from conftest import TEST_MODELS, ROOT, require

BRATS = {"WT": [1, 2, 3], "TC": [1, 3], "ET": [3]}
CLASSES = [0, 1, 2, 3]


def brute_log_odds(logits: np.ndarray, class_labels, region) -> np.ndarray:
    """log(sum_{c in R} e^l_c) - log(sum_{c not in R} e^l_c), one voxel at a time in Python
    floats (the random logits are small enough for exp not to overflow)."""
    flat = logits.reshape(logits.shape[0], -1)
    out = np.empty(flat.shape[1])
    for v in range(flat.shape[1]):
        inside = sum(math.exp(float(flat[c, v])) for c, lab in enumerate(class_labels)
                     if lab in region)
        outside = sum(math.exp(float(flat[c, v])) for c, lab in enumerate(class_labels)
                      if lab not in region)
        out[v] = math.log(inside) - math.log(outside)
    return out.reshape(logits.shape[1:])


@pytest.mark.parametrize("class_labels", [CLASSES, [2, 0, 3, 1]])
def test_region_log_odds_matches_brute_force(class_labels):
    rng = np.random.default_rng(13)
    logits = (rng.standard_normal((4, 5, 6, 7)) * 6).astype(np.float32)
    for name, region in BRATS.items():
        got = reference.region_log_odds(logits, class_labels, region)
        assert got.dtype == np.float32 and got.shape == (5, 6, 7)
        want = brute_log_odds(logits, class_labels, region)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5, err_msg=name)


def test_region_log_odds_is_stable_for_huge_logits():
    rng = np.random.default_rng(14)
    logits = (rng.standard_normal((4, 3, 4, 5)) * 4).astype(np.float32)
    for region in BRATS.values():
        small = reference.region_log_odds(logits, CLASSES, region)
        # a constant added to every class logit leaves the log-odds unchanged
        for shift in (900.0, -900.0):
            shifted = reference.region_log_odds(logits.astype(np.float64) + shift, CLASSES,
                                                region)
            assert np.all(np.isfinite(shifted))
            np.testing.assert_allclose(shifted, small, atol=1e-4)
    # one dominant class: log(e^1000 + 2 e^-1000) - 0 = 1000; ET: -1000 - log(1 + e^1000 + e^-1000)
    x = np.array([0.0, 1000.0, -1000.0, -1000.0]).reshape(4, 1)
    assert reference.region_log_odds(x, CLASSES, [1, 2, 3])[0] == np.float32(1000.0)
    assert reference.region_log_odds(x, CLASSES, [3])[0] == np.float32(-2000.0)


def test_region_log_odds_two_classes_is_the_logit_difference():
    rng = np.random.default_rng(15)
    logits = rng.standard_normal((2, 50)) * 30
    got = reference.region_log_odds(logits, [0, 1], [1])
    np.testing.assert_allclose(got, (logits[1] - logits[0]).astype(np.float32), rtol=1e-6,
                               atol=1e-5)


@pytest.mark.parametrize("region", [[], [4], [1, 5], [0, 1, 2, 3]])
def test_region_log_odds_refuses_regions_not_made_of_classes(region):
    with pytest.raises(ValueError):
        reference.region_log_odds(np.zeros((4, 2)), CLASSES, region)


def brute_nested(wt, tc, et, threshold):
    out = np.zeros(wt.shape, np.uint8)
    for i in np.ndindex(wt.shape):
        if et[i] > threshold:
            out[i] = 3
        elif tc[i] > threshold:
            out[i] = 1
        elif wt[i] > threshold:
            out[i] = 2
    return out


@pytest.mark.parametrize("threshold", [0.0, 0.7, -1.2])
def test_brats_nested_matches_brute_force(threshold):
    rng = np.random.default_rng(16)
    wt, tc, et = (rng.standard_normal((3, 6, 7, 8)) * 2).astype(np.float32)
    got = reference.brats_nested(wt, tc, et, threshold)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, brute_nested(wt, tc, et, threshold))
    assert set(np.unique(got)) == {0, 1, 2, 3}


def test_brats_argmax_matches_brute_force():
    rng = np.random.default_rng(17)
    logits = rng.standard_normal((4, 6, 7, 8)) * 3
    prob = np.exp(logits) / np.exp(logits).sum(0)
    labels = [0, 2, 1, 3]
    got = reference.brats_argmax(prob, labels)
    want = np.zeros(prob.shape[1:], np.uint8)
    for i in np.ndindex(want.shape):
        p = [prob[(c,) + i] for c in range(4)]
        want[i] = labels[p.index(max(p))]
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    # ties go to the first class
    tie = np.array([[0.25, 0.4], [0.25, 0.4], [0.25, 0.1], [0.25, 0.1]])
    np.testing.assert_array_equal(reference.brats_argmax(tie, CLASSES), [0, 0])


def pointwise(w: np.ndarray, b: np.ndarray, image: np.ndarray) -> np.ndarray:
    return np.einsum("kc,c...->k...", w.astype(np.float64), image.astype(np.float64)) \
        + b.astype(np.float64).reshape((-1,) + (1,) * (image.ndim - 1))


@pytest.mark.parametrize("model,channels", [("pointwise-softmax4.onnx", 4),
                                            ("pointwise-regions3.onnx", 3)])
def test_sliding_window_all_channels_of_a_pointwise_model(model, channels):
    """A 1x1x1 convolution gives the same value in every window covering a voxel, so the
    stitched (weighted-average) output is the convolution of the image, channel by channel."""
    import onnx
    from onnx import numpy_helper

    path = require(TEST_MODELS / model)
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    w, b = inits["w"].reshape(channels, 4), inits["b"]
    # y shorter than the patch (padding), z and x with several overlapping windows
    image = np.random.default_rng(18).standard_normal((4, 37, 21, 70)).astype(np.float32)
    sess = reference.session(path)
    stitched = reference.sliding_window(sess, image, all_channels=True)
    assert stitched.shape == (channels, 37, 21, 70) and stitched.dtype == np.float32
    np.testing.assert_allclose(stitched, pointwise(w, b, image), rtol=1e-5, atol=1e-5)
    first = reference.sliding_window(sess, image)
    assert np.array_equal(first, stitched[0])


def test_sliding_window_all_channels_fixed_batch_foreign_model():
    """foreign4.onnx (fixed batch 2, no metadata, renamed tensors) is unet4-p32: the stitched
    class logits agree, and the region log-odds derived from them too."""
    foreign = reference.session(require(TEST_MODELS / "foreign4.onnx"))
    own = reference.session(require(ROOT / "onnx" / "unet4-p32.onnx", "demo model"))
    image = np.random.default_rng(19).standard_normal((4, 20, 40, 36)).astype(np.float32)
    a = reference.sliding_window(foreign, image, all_channels=True)
    b = reference.sliding_window(own, image, all_channels=True)
    assert a.shape == (4, 20, 40, 36)
    np.testing.assert_allclose(a, b, atol=1e-4)
    for region in BRATS.values():
        np.testing.assert_allclose(reference.region_log_odds(a, CLASSES, region),
                                   reference.region_log_odds(b, CLASSES, region), atol=1e-4)
