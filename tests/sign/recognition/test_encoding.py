"""RQE / RQE-SF: invariances, shoulder fixing, quantization bins, missing parts, input errors."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.sign.recognition.data import _draw_gloss, _draw_signer, _render_sign
from zoo.sign.recognition.encoding import LEFT_HAND, SHOULDERS, encode, num_bins, quantize


def _video(seed: int = 0, face: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = _render_sign(_draw_gloss(rng), _draw_signer(rng), rng).astype(np.float64)
    if face:
        face_pts = x[:, :1] + rng.normal(0, 0.02, (x.shape[0], 468, 3))
        x = np.concatenate([x, face_pts], axis=1)
    return x


@pytest.mark.parametrize("method", ["rqe", "rqe_sf"])
@pytest.mark.parametrize("face", [False, True])
def test_translation_and_scale_leave_rqe_unchanged(method, face):
    x = _video(1, face)
    base = encode(x, method)
    moved = encode(x * 1.7 + np.array([0.2, -0.1, 0.3]), method)
    np.testing.assert_array_equal(np.isnan(base), np.isnan(moved))
    np.testing.assert_allclose(np.nan_to_num(moved), np.nan_to_num(base), atol=1e-6)
    raw = encode(x, "raw")
    assert not np.allclose(np.nan_to_num(encode(x * 1.7 + 0.2, "raw")), np.nan_to_num(raw))


def test_rqe_sf_removes_shoulder_jitter():
    x = _video(2)
    jit = x.copy()
    rng = np.random.default_rng(0)
    jit[:, list(SHOULDERS), :2] += rng.normal(0, 0.01, (len(x), 2, 2))
    sf = encode(jit, "rqe_sf", quantized=False)
    assert np.allclose(sf[:, list(SHOULDERS)], sf[:1, list(SHOULDERS)])  # constant shoulders
    rqe = encode(jit, "rqe", quantized=False)
    assert rqe[:, list(SHOULDERS)].std(0).max() > 0.01
    # under RQE the jitter shakes every other landmark frame by frame (per-frame reference); under RQE-SF
    # it only nudges the video's fixed reference and scale, a change constant in time
    still = list(range(11)) + list(range(23, 33))  # head and legs: do not move with the sign
    clean_sf, clean_rqe = encode(x, "rqe_sf", quantized=False), encode(x, "rqe", quantized=False)
    shake_sf = np.nanmean(np.nanstd(sf[:, still] - clean_sf[:, still], axis=0))
    shake_rqe = np.nanmean(np.nanstd(rqe[:, still] - clean_rqe[:, still], axis=0))
    assert shake_sf < 0.2 * shake_rqe


def test_hand_relative_to_wrist_and_scale():
    x = _video(3)
    u = encode(x, "rqe", quantized=False)
    width = np.median(np.linalg.norm(x[:, 11, :2] - x[:, 12, :2], axis=-1))
    t = np.where(np.isfinite(x[:, 54]).all(-1))[0][0]
    np.testing.assert_allclose(u[t, 55:75], (x[t, 55:75] - x[t, 54]) / width, atol=1e-5)
    mid = x[t, list(SHOULDERS)].mean(0)
    np.testing.assert_allclose(u[t, 54], (x[t, 54] - mid) / width, atol=1e-5)
    np.testing.assert_allclose(u[t, :33], (x[t, :33] - mid) / width, atol=1e-5)


def test_quantization_bins():
    v = np.linspace(-5, 5, 1001)
    q = quantize(v, 0.25, 1.0)
    assert num_bins(0.25, 1.0) == 9
    np.testing.assert_allclose(np.unique(q), np.arange(-4, 5) * 0.25)
    assert np.abs(q - np.clip(v, -1, 1)).max() <= 0.125 + 1e-9
    e = encode(_video(4), "rqe", step=0.1, limit=2.0)
    finite = e[np.isfinite(e)]
    np.testing.assert_allclose(finite / 0.1, np.round(finite / 0.1), atol=1e-4)
    assert len(np.unique(np.round(finite / 0.1))) <= num_bins(0.1, 2.0)
    assert np.abs(finite).max() <= 2.0 + 1e-6


def test_missing_hand_stays_missing_and_raw_is_identity():
    x = _video(5)
    x[:5, LEFT_HAND] = np.nan
    for method in ("rqe", "rqe_sf"):
        e = encode(x, method)
        assert np.isnan(e[:5, LEFT_HAND]).all() and e.dtype == np.float32
    np.testing.assert_array_equal(encode(x, "raw"), x.astype(np.float32))


def test_no_shoulders_falls_back():
    x = _video(6)
    x[:, list(SHOULDERS)] = np.nan
    e = encode(x, "rqe")
    assert np.isfinite(e[:, 0]).all()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="expected a Holistic landmark array"):
        encode(np.zeros((4, 10, 3)), "rqe")
    with pytest.raises(ValueError, match="method must be one of"):
        encode(np.zeros((4, 75, 3)), "pca")
