"""The exact-integer representation (normlab.exact): sums that never round, merged in any order."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab
from normlab.exact import INT64_LIMIT, ExactMoments, ExactSum, decode_bigints, encode_bigints


def test_exact_sum_flushes_before_int64_overflows():
    s = ExactSum((2,))
    big = np.array([2**62, -(2**62)], dtype=np.int64)
    for _ in range(5):
        s.add(big, bound=2**62)  # the second add would pass 2**63 in int64: flushed first
    assert s.get().tolist() == [5 * 2**62, -5 * 2**62]
    assert s.hot_bound <= INT64_LIMIT


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=30), st.integers(0, 29))
def test_exact_sum_merge_is_exact_for_any_split(values, cut):
    cut = min(cut, len(values))
    whole, left, right = ExactSum((1,)), ExactSum((1,)), ExactSum((1,))
    for i, v in enumerate(values):
        part = np.array([v], dtype=np.int64)
        whole.add(part, abs(v))
        (left if i < cut else right).add(part, abs(v))
    left += right
    assert left.get().tolist() == whole.get().tolist() == [sum(values)]


def test_exact_moments_and_moments_agree_and_copy_flat():
    x = np.random.default_rng(0).integers(0, 256, (50, 4), dtype=np.uint8)
    m = normlab.Moments("feature").update(x)
    assert isinstance(m.sums, ExactMoments)
    s1, s2 = m.exact_sums()
    assert s1.tolist() == x.astype(int).sum(axis=0).tolist()
    assert s2.tolist() == (x.astype(int) ** 2).sum(axis=0).tolist()
    clone = copy.deepcopy(m)
    clone.update(x)  # the copy shares no array with the original
    assert m.exact_sums()[0].tolist() == s1.tolist()


def test_float_data_have_no_exact_sums():
    m = normlab.Moments().update(np.ones((3, 2)))
    with pytest.raises(normlab.NormlabError, match="integer data"):
        m.exact_sums()


def test_bigints_round_trip():
    values = np.array([0, -1, 2**62, -(2**120) + 7], dtype=object)
    back = decode_bigints("s", encode_bigints("s", values), (4,))
    assert back.tolist() == values.tolist()


def test_a_sum_merged_with_itself_doubles():
    s = ExactSum((1,))
    s.add(np.array([2**61], dtype=np.int64), 2**61)
    s.add_exact(np.array([5], dtype=object))
    s += s
    assert s.get().tolist() == [2 * (2**61 + 5)]
    c = normlab.CoMoments().update(np.arange(6, dtype=np.uint8).reshape(3, 2))
    whole = normlab.CoMoments().update(np.tile(np.arange(6, dtype=np.uint8).reshape(3, 2), (2, 1)))
    c += c
    assert c == whole
