"""Exact histograms and nearest-rank percentiles against numpy; the clip-percentile scheme."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab
from normlab import schemes
from normlab.errors import DTypeError, NormlabError
from normlab.histogram import ClipPercentile, Histogram, nearest_rank
from normlab.imagestats import ImageStats

QS = (0, 0.5, 1, 25, 50, 99.5, 99.9, 100)


def test_nearest_rank_is_numpys_inverted_cdf():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 200, 1001):
        v = rng.integers(0, 256, n)
        counts = np.bincount(v, minlength=256)
        for q in (*QS, 12.3, 33.3333):
            assert nearest_rank(counts, q) == np.percentile(v, q, method="inverted_cdf"), (n, q)


def test_nearest_rank_uses_the_decimal_written():
    counts = np.ones(10, np.int64)  # values 0..9, one each
    assert nearest_rank(counts, 10) == 0  # rank ⌈1⌉ = 1 -> value 0
    assert nearest_rank(counts, 10.000001) == 1
    with pytest.raises(NormlabError, match=r"\[0, 100\]"):
        nearest_rank(counts, 101)


@pytest.mark.parametrize("axis", ["channel", "global", "feature"])
def test_percentiles_match_numpy_per_axis(axis):
    x = np.random.default_rng(1).integers(0, 256, (40, 3, 2, 3), dtype=np.uint8)
    h = Histogram(axis).update(x[:15]).update(x[15:])
    ref = {"channel": x.reshape(-1, 3), "global": x.reshape(-1), "feature": x}[axis]
    for q in QS:
        np.testing.assert_array_equal(
            h.percentile(q), np.percentile(ref, q, axis=0, method="inverted_cdf")
        )


def test_uint16_percentiles_and_chw_channels():
    x = np.random.default_rng(2).integers(0, 65536, (30, 2, 5, 4), dtype=np.uint16)
    h = Histogram("channel", channel_axis=0).update(x)
    assert h.counts.shape == (2, 65536)
    ref = np.moveaxis(x, 1, -1).reshape(-1, 2)
    np.testing.assert_array_equal(
        h.percentile(99.5), np.percentile(ref, 99.5, axis=0, method="inverted_cdf")
    )
    with pytest.raises(NormlabError, match="per-pixel"):
        Histogram("feature").update(x)


def test_refuses_non_integer_data():
    with pytest.raises(DTypeError, match="uint8 or uint16"):
        Histogram("global").update(np.zeros((2, 3), np.float32))


@settings(max_examples=40)
@given(st.integers(1, 30), st.integers(0, 30), st.sampled_from(["feature", "channel", "global"]))
def test_merge_law_and_reduce(n, cut, axis):
    x = np.random.default_rng(n).integers(0, 256, (n, 2, 3), dtype=np.uint8)
    cut = min(cut, n)
    whole = Histogram(axis).update(x)
    parts = Histogram(axis)
    if cut:
        parts += Histogram(axis).update(x[:cut])
    if cut < n:
        parts += Histogram(axis).update(x[cut:])
    np.testing.assert_array_equal(parts.counts, whole.counts)
    if axis == "feature":
        coarse = whole.reduce("channel", sample_shape=(2, 3))
        np.testing.assert_array_equal(coarse.counts, Histogram("channel").update(x).counts)
    np.testing.assert_array_equal(
        whole.reduce("global", sample_shape=(2, 3)).counts, Histogram("global").update(x).counts
    )


def test_compute_stats_percentiles_are_saved(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, (50, 4, 4, 3), dtype=np.uint8)
    m = normlab.compute_stats(x, "channel", percentiles=(0.5, 99.5), chunk_size=7)
    ref = np.percentile(x.reshape(-1, 3), [0.5, 99.5], axis=0, method="inverted_cdf")
    np.testing.assert_array_equal(m.percentile(0.5), ref[0])
    m.save(tmp_path / "s.safetensors")
    meta, _ = normlab.io.read_file(tmp_path / "s.safetensors")
    assert meta["percentiles"] == {"0.5": ref[0].tolist(), "99.5": ref[1].tolist()}
    back = normlab.load(tmp_path / "s.safetensors")
    assert back == m and isinstance(back, ImageStats)
    with pytest.raises(NormlabError, match=r"\[0, 100\]"):
        normlab.compute_stats(x, "channel", percentiles=(0.5, 120))


def test_feature_stats_keep_a_channel_histogram_that_reduces():
    x = np.random.default_rng(4).integers(0, 256, (20, 3, 3, 3), dtype=np.uint8)
    m = normlab.compute_stats(x, "feature", histogram="feature")
    g = m.reduce("global")
    assert g.histogram.axis == "global"
    assert g.percentile(50) == np.percentile(x, 50, method="inverted_cdf")


def test_clip_percentile_scheme_against_reference(tmp_path):
    assert "clip-percentile" in schemes.names()
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (60, 5, 5, 3), dtype=np.uint8)
    stats = normlab.compute_stats(x, "channel", percentiles=(1, 99))
    c = schemes.from_stats("clip-percentile", stats, low=1, high=99)
    lo = np.percentile(x.reshape(-1, 3), 1, axis=0, method="inverted_cdf")
    hi = np.percentile(x.reshape(-1, 3), 99, axis=0, method="inverted_cdf")
    ref = (np.clip(x.astype(np.float64), lo, hi) - lo) / (hi - lo)
    np.testing.assert_allclose(c.transform(x), ref, atol=1e-6)
    np.testing.assert_allclose(ClipPercentile(low=1, high=99).fit(x).transform(x), ref, atol=1e-6)
    inside = np.clip(x, lo.astype(np.uint8), hi.astype(np.uint8))
    np.testing.assert_allclose(c.inverse_transform(c.transform(inside)), inside, atol=1e-4)
    c.save(tmp_path / "c.safetensors")
    back = normlab.load(tmp_path / "c.safetensors")
    np.testing.assert_array_equal(back.transform(x), c.transform(x))
    with pytest.raises(NormlabError, match="not one affine map"):
        c.affine((5, 5, 3))


def test_clip_percentile_needs_histograms_and_handles_constant():
    x = np.full((10, 2, 2, 1), 9, np.uint8)
    with pytest.raises(NormlabError, match="histogram"):
        ClipPercentile().from_stats(normlab.Moments("channel").update(x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = ClipPercentile().fit(x)
    assert any("equal low and high" in str(w.message) for w in caught)
    assert np.all(c.transform(x) == 0)


def test_tabular_percentiles_are_per_feature():
    x = np.random.default_rng(6).integers(0, 256, (300, 4), dtype=np.uint8)
    m = normlab.compute_stats(x, percentiles=(10, 90), chunk_size=64)
    assert m.histogram.axis == "feature"
    np.testing.assert_array_equal(
        m.percentile(90), np.percentile(x, 90, axis=0, method="inverted_cdf")
    )


def test_review_regressions_channel_axis_and_coarser_histograms():
    import normlab
    from normlab.errors import MergeError, NormlabError
    from normlab.histogram import ClipPercentile, Histogram

    x = np.random.default_rng(0).integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    with pytest.raises(NormlabError, match="re-laid"):
        Histogram("channel").update(x).reduce("channel", sample_shape=(4, 4, 3), channel_axis=0)
    chw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))[:, :, :3, :3]  # (20, 3, 3, 3)
    hwc = x[:, :3, :3, :]
    with pytest.raises(MergeError, match="CHW.*HWC"):
        Histogram("channel", channel_axis=0).update(chw) + Histogram("channel").update(hwc)
    coarse = normlab.compute_stats(x, "channel", histogram="global")
    with pytest.raises(NormlabError, match="channel histograms or finer"):
        ClipPercentile().from_stats(coarse)
    fine = ClipPercentile().from_stats(normlab.compute_stats(x, "feature", histogram="feature"))
    direct = ClipPercentile().fit(x)
    assert np.array_equal(fine.low_, direct.low_) and np.array_equal(fine.high_, direct.high_)
