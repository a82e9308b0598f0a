"""The statistics core under hostile input: every path (any chunk size, ``a + b``, ``reduce``,
save/load, the engines) agrees with an exact reference or refuses with normlab's own error.

References are exact: :class:`fractions.Fraction` sums, rounded once (``float(Fraction)`` is
correctly rounded). Found by a hostile tester; each test names its finding.
"""

from __future__ import annotations

import json
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save as save_tensors
from typer.testing import CliRunner

import normlab
from normlab import CoMoments, Moments, compute_stats, schemes
from normlab.cli import app
from normlab.errors import (
    DTypeError,
    FileFormatError,
    FloatOverflowError,
    MergeError,
    NormlabError,
)
from normlab.io import read_file

runner = CliRunner()


def invoke(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args])


def exact_mean_var(values: list[int], ddof: int = 0) -> tuple[float, float]:
    n = len(values)
    mean = Fraction(sum(values), n)
    ss = sum((Fraction(v) - mean) ** 2 for v in values)
    return float(mean), float(ss / (n - ddof))


# ----------------------------------------------------------- 1. exact integer statistics
INT_DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64"]
I32 = np.iinfo(np.int32)


@st.composite
def integer_data(draw: st.DrawFn) -> tuple[np.ndarray, str]:
    """Integer data of any accepted dtype, at the extremes the exact path promises."""
    dtype = np.dtype(draw(st.sampled_from(INT_DTYPES)))
    if dtype.kind == "b":
        lo, hi = 0, 1
    else:
        info = np.iinfo(dtype)
        lo, hi = max(int(info.min), int(I32.min)), min(int(info.max), int(I32.max))
    value = st.one_of(st.sampled_from([lo, hi, lo + 1, hi - 1, 0]), st.integers(lo, hi))
    n = draw(st.integers(1, 12))
    d = draw(st.integers(1, 3))
    flat = draw(st.lists(value, min_size=n * d, max_size=n * d))
    return np.array(flat, dtype=np.int64).reshape(n, d).astype(dtype), draw(
        st.sampled_from(["feature", "channel", "global"])
    )


@settings(max_examples=80)
@given(data=integer_data(), cut=st.integers(0, 12), chunk=st.integers(1, 12))
def test_integer_statistics_are_exact_on_every_path(data, cut, chunk, tmp_path_factory):
    """Finding 1: int32 (and wider ints within int32) extremes merged → raw OverflowError."""
    x, axis = data
    cut = min(cut, len(x))
    ints = x.astype(np.int64)
    if axis == "channel":
        x = x[:, None, :]  # samples (1, d): d channels
    columns = [ints.reshape(-1).tolist()] if axis == "global" else ints.T.tolist()
    expected = [exact_mean_var(c) for c in columns]

    def check(m: Moments) -> None:
        got = list(zip(m.mean.reshape(-1).tolist(), m.var().reshape(-1).tolist(), strict=True))
        assert got == expected

    whole = compute_stats(x, axis, chunk_size=chunk)
    check(whole)
    parts = [Moments(axis).update(p) for p in (x[:cut], x[cut:]) if len(p)]
    merged = parts[0] + parts[1] if len(parts) == 2 else parts[0]
    check(merged)
    if len(parts) == 2:
        check(parts[1] + parts[0])
        folded = Moments(axis)
        folded += parts[0]
        folded += parts[1]
        check(folded)
    if axis == "feature":
        coarse = compute_stats(x, "feature", chunk_size=chunk).reduce("global")
        flat = ints.reshape(-1).tolist()
        assert (float(coarse.mean), float(coarse.var())) == exact_mean_var(flat)
    path = tmp_path_factory.mktemp("exact") / "m.st"
    merged.save(path)
    check(normlab.load(path))


def test_int32_extremes_from_two_files_by_the_cli(tmp_path):
    """Finding 1's reproduction: two files of int32 extremes, global statistics."""
    np.save(tmp_path / "i1.npy", np.full((5, 2), 2**31 - 1, np.int32))
    np.save(tmp_path / "i2.npy", np.full((5, 2), -(2**31), np.int32))
    out = tmp_path / "g.st"
    result = invoke(
        "stats", tmp_path / "i1.npy", tmp_path / "i2.npy", "--axis", "global", "-o", out, "-q"
    )
    assert result.exit_code == 0, result.output
    m = normlab.load(out)
    values = [2**31 - 1] * 10 + [-(2**31)] * 10
    assert (float(m.mean), float(m.var())) == exact_mean_var(values)
    assert float(m.var(ddof=1)) == exact_mean_var(values, ddof=1)[1]
    x = np.full((10, 1), 2**31 - 1, np.int32)
    assert compute_stats(x, "global", chunk_size=1).var().tolist() == 0.0


@pytest.mark.parametrize(
    "x",
    [
        np.full((3, 2), 2**62, np.int64),
        np.full((3, 2), 2**64 - 1, np.uint64),
        np.full((3, 2), 2**32 - 1, np.uint32),
        np.full((3, 2), -(2**31) - 1, np.int64),
    ],
    ids=lambda x: f"{x.dtype}-{x.flat[0]}",
)
def test_integers_beyond_the_exact_range_are_refused_clearly(x, tmp_path):
    """Wider integers are exact within int32 (above) and refused, naming the range, beyond."""
    for run in (
        lambda: compute_stats(x, "global"),
        lambda: Moments("feature").update(x),
        lambda: Moments("feature").update(x, sample_weight=np.ones(3, np.int64)),
    ):
        with pytest.raises(DTypeError, match=rf"{x.dtype} values outside the int32 range"):
            run()
    np.save(tmp_path / "w.npy", x)
    result = invoke("stats", tmp_path / "w.npy", "-o", tmp_path / "w.st", "-q")
    assert result.exit_code == 1 and "float64" in result.output
    assert not (tmp_path / "w.st").exists()


# ----------------------------------------------------------- 2. float overflow
HUGE = np.array([[-1e300, 1.0], [-1e300, 2.0], [1e300, 1.0], [1e300, 3.0]])


def _paths_of_huge() -> list[tuple[str, object]]:
    x = HUGE
    out: list[tuple[str, object]] = [
        (f"compute_stats {axis} chunk {c}", lambda a=axis, c=c: compute_stats(x, a, chunk_size=c))
        for axis in ("feature", "global")
        for c in (1, 2, 3, None)
    ]
    out += [
        ("a + b", lambda: Moments().update(x[:2]) + Moments().update(x[2:])),
        ("b + a", lambda: Moments().update(x[2:]) + Moments().update(x[:2])),
        ("reduce", lambda: Moments().update(np.array([[1.7e308, -1.7e308]])).reduce("global")),
        ("weighted", lambda: Moments().update(x, sample_weight=[0.5, 1.5, 1.0, 2.5])),
        (
            "weighted merge",
            lambda: (
                Moments().update(x[:2], sample_weight=[0.5, 1])
                + Moments().update(x[2:], sample_weight=[0.5, 1])
            ),
        ),
        ("co-moments", lambda: CoMoments().update(x[:2]) + CoMoments().update(x[2:])),
        ("co-moments by chunks", lambda: CoMoments().update(x[:2]).update(x[2:])),
        (
            "variance over a weight sum below the values' spread",
            lambda: Moments().update([[1e154], [-1e154]], sample_weight=[0.75, 0.75]).var(ddof=1),
        ),
    ]
    return out


@pytest.mark.parametrize("name,run", _paths_of_huge(), ids=[n for n, _ in _paths_of_huge()])
def test_float_overflow_is_refused_on_every_path(name, run):
    """Finding 2: the Chan merge overflowed silently to std=inf with a raw numpy warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raw RuntimeWarning on the way
        with pytest.raises(FloatOverflowError, match="float64 sums overflow at statistic"):
            run()


@settings(max_examples=60)
@given(
    exponent=st.integers(150, 308),
    signs=st.lists(st.sampled_from([-1.0, 1.0]), min_size=2, max_size=8),
    chunk=st.integers(1, 8),
    cut=st.integers(1, 7),
)
def test_huge_floats_give_finite_statistics_or_the_overflow_error(exponent, signs, chunk, cut):
    x = (np.array(signs) * 10.0**exponent * 1.5)[:, None]
    cut = min(cut, len(x) - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for run in (
            lambda: compute_stats(x, "feature", chunk_size=chunk),
            lambda: Moments().update(x[:cut]) + Moments().update(x[cut:]),
        ):
            try:
                m = run()
            except FloatOverflowError:
                continue
            assert np.isfinite(m.var()).all() and np.isfinite(m.mean).all()


def test_float_overflow_from_two_files_writes_nothing(tmp_path):
    np.save(tmp_path / "h1.npy", HUGE[:2])
    np.save(tmp_path / "h2.npy", HUGE[2:])
    out = tmp_path / "h.st"
    result = invoke("stats", tmp_path / "h1.npy", tmp_path / "h2.npy", "-o", out)
    assert result.exit_code == 1
    assert "float64 sums overflow" in result.output and "RuntimeWarning" not in result.output
    assert not out.exists()


# ----------------------------------------------------------- 3. ddof ≥ samples
@pytest.mark.parametrize("dtype", ["uint8", "float64"])
def test_ddof_without_degrees_of_freedom_is_refused_everywhere(dtype, tmp_path):
    """Finding 3: ddof ≥ n gave NaN or a false 'zero variance'."""
    x = np.arange(6).reshape(3, 2).astype(dtype)
    message = r"ddof=3 needs more than 3 values per statistic.* only 3 \(from 3 samples"
    for run in (
        lambda: compute_stats(x, "feature").var(ddof=3),
        lambda: compute_stats(x, "feature").std(ddof=4),
        lambda: normlab.ZScore(ddof=3).fit(x),
        lambda: normlab.ZScore(ddof=3).fit_stats(compute_stats(x)),
        lambda: normlab.ZScore(axis="global", ddof=6).fit(x),
    ):
        with pytest.raises(NormlabError, match=r"ddof=\d needs more than"):
            run()
    with pytest.raises(NormlabError, match=message):
        compute_stats(x, "feature").var(ddof=3)
    assert compute_stats(x, "global").var(ddof=5).shape == ()  # 6 values: 1 degree left
    pytest.importorskip("sklearn")
    from normlab.sklearn import InputScaler

    with pytest.raises(NormlabError, match="ddof=3"):
        InputScaler(scheme="feature", ddof=3).fit(x)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((50, 3)))
    assert invoke("stats", tmp_path / "x.npy", "-o", tmp_path / "x.st", "-q").exit_code == 0
    out = tmp_path / "z.st"
    result = invoke(
        "fit", "--stats", tmp_path / "x.st", "--scheme", "feature", "--ddof", 50, "-o", out
    )
    assert result.exit_code == 1 and "50 values" in result.output and "ddof" in result.output
    assert not out.exists()


def test_a_failed_fit_leaves_no_half_fitted_normalizer():
    """A fit refused for ddof (or values missing) once left stats_ set without shift_/scale_:
    is_fitted said True and transform failed with an AttributeError."""
    x = np.random.default_rng(10).random((3, 2))
    z = normlab.ZScore(ddof=3)
    with pytest.raises(NormlabError, match="ddof=3"):
        z.fit(x)
    assert not z.is_fitted
    with pytest.raises(normlab.errors.NotFittedError):
        z.transform(x)
    z = normlab.ZScore(ddof=3).fit(np.random.default_rng(11).random((5, 2)))
    scale, seen = z.scale_.copy(), z.n_samples_seen_
    y = np.random.default_rng(12).random((2, 2))
    z2 = normlab.ZScore(ddof=3, axis="global")
    with pytest.raises(NormlabError, match="ddof=3"):
        z2.partial_fit(y[:1])  # 2 values, ddof 3
    assert not z2.is_fitted
    z.partial_fit(y)  # 7 samples: fine, and the state moved on
    assert z.n_samples_seen_ == seen + 2 and not np.array_equal(z.scale_, scale)
    m = normlab.Moments(nan_policy="omit").update(np.array([[1.0, np.nan], [2.0, np.nan]]))
    mm = normlab.MinMax()
    with pytest.raises(NormlabError, match="have no values"):
        mm.fit_stats(m)
    assert not mm.is_fitted


def test_ddof_counts_per_element_under_omit():
    x = np.array([[1.0, 1.0], [2.0, np.nan], [3.0, np.nan]])
    m = compute_stats(x, "feature", nan_policy="omit")
    assert m.var(ddof=0).tolist()[0] == float(Fraction(2, 3))
    with pytest.raises(NormlabError, match=r"feature \(1,\) has only 1"):
        m.var(ddof=1)


# ----------------------------------------------------------- 4. features without values
def _all_nan_column(tmp_path: Path) -> Path:
    x = np.random.default_rng(1).random((10, 3))
    x[:, 1] = np.nan
    np.save(tmp_path / "an.npy", x)
    return tmp_path / "an.npy"


def test_a_feature_without_values_is_reported_and_never_fitted(tmp_path):
    """Finding 4: an all-NaN feature under omit was 'constant' and got shift 0 / scale 1."""
    data = _all_nan_column(tmp_path)
    stats_file = tmp_path / "an.st"
    result = invoke("stats", data, "--nan-policy", "omit", "-o", stats_file)
    assert result.exit_code == 0, result.output
    assert "no values    1 of 3 features" in result.output
    assert "constant     0 of 3" in result.output
    shown = invoke("show", stats_file)
    assert "no values    1 of 3 features (all NaN/inf, omitted) at 1" in shown.output
    m = normlab.load(stats_file)
    assert m.no_values().tolist() == [False, True, False]
    assert m.summary()["no_values"] == 1 and m.summary()["constant"] == 0
    per_feature = [
        s
        for s in schemes.names()
        if "moments" in schemes.entry(s).needs and schemes.entry(s).granularity == "feature"
    ]
    assert {"feature", "minmax"} <= set(per_feature)
    for scheme in per_feature:
        out = tmp_path / f"{scheme}.st"
        result = invoke("fit", "--stats", stats_file, "--scheme", scheme, "-o", out)
        assert result.exit_code == 1, (scheme, result.output)
        assert "1 of 3 feature(s) have no values ((1,))" in result.output
        assert not out.exists()
        with pytest.raises(NormlabError, match="have no values"):
            schemes.fit_stats(scheme, m)
    x = np.load(data)
    with pytest.raises(NormlabError, match=r"cannot fit ZScore: 1 of 3 feature\(s\)"):
        normlab.ZScore().fit(x, nan_policy="omit")
    # per-channel and global statistics of the same data have values everywhere
    assert np.isfinite(normlab.ZScore(axis="global").fit(x, nan_policy="omit").scale_).all()


def test_a_channel_without_values_gives_nothing_to_paste(tmp_path):
    x = np.random.default_rng(1).random((10, 2, 2, 3))
    x[..., 1] = np.nan
    np.save(tmp_path / "c.npy", x)
    out = tmp_path / "c.st"
    result = invoke(
        "stats", tmp_path / "c.npy", "--nan-policy", "omit", "--axis", "channel", "-o", out
    )
    assert result.exit_code == 0, result.output
    assert "no values    1 of 3 channels" in result.output
    assert "# nothing to paste: 1 channel(s) without values" in result.output
    assert "nan, " not in result.output.split("# nothing")[1]
    result = invoke("show", out, "--format", "torchvision")
    assert result.exit_code == 1 and "have no values" in result.output
    with pytest.raises(NormlabError, match="have no values"):
        normlab.export.to_torchvision(normlab.load(out))
    every = np.full((4, 3), np.nan)
    with pytest.raises(NormlabError, match="every one of the 12 values of the 4 samples was NaN"):
        compute_stats(every, nan_policy="omit").var()


# ----------------------------------------------------------- 5. impossible counts in files
def _write(meta: dict, tensors: dict, path: Path) -> Path:
    path.write_bytes(save_tensors(tensors, metadata={"normlab": json.dumps(meta)}))
    return path


def _u8_channel_file(tmp_path: Path) -> Path:
    x = np.random.default_rng(0).integers(0, 256, (10, 8, 10, 3), dtype=np.uint8)
    path = tmp_path / "u8.st"
    compute_stats(x, "channel").save(path)
    return path


@pytest.mark.parametrize(
    "field,change",
    [
        ("count", lambda m, t: t.__setitem__("count", np.full(3, 2**62, np.int64))),
        ("count", lambda m, t: t.__setitem__("count", np.full(3, 2**63 - 1, np.int64))),
        ("count", lambda m, t: t.__setitem__("count", t["count"] + 1)),
        ("count", lambda m, t: t.__setitem__("n_nonfinite", t["n_nonfinite"] + 1)),
        ("n_samples_seen", lambda m, t: m.__setitem__("n_samples_seen", 0)),
        ("n_samples_seen", lambda m, t: m.__setitem__("n_samples_seen", 11)),
        ("n_samples_seen", lambda m, t: m.__setitem__("n_samples_seen", 10**30)),
        ("n_samples_seen", lambda m, t: m.__setitem__("n_samples_seen", 1e30)),
        ("weighted", lambda m, t: m.__setitem__("weighted", "yes")),
        ("mixed_shapes", lambda m, t: m.__setitem__("mixed_shapes", 1)),
        ("n_nonfinite", lambda m, t: t.__setitem__("n_nonfinite", t["n_nonfinite"] + 0 + 1)),
    ],
)
def test_impossible_counts_are_refused_at_load(field, change, tmp_path):
    """Finding 5: a count of 2**62 (true 800) loaded, was shown and fitted."""
    meta, tensors = read_file(_u8_channel_file(tmp_path))
    change(meta, tensors)
    bad = _write(meta, tensors, tmp_path / "bad.st")
    with pytest.raises(FileFormatError, match=rf"bad.st: corrupt Moments file .*{field}"):
        normlab.load(bad)
    for command in (("show", bad), ("fit", "--stats", bad, "-o", tmp_path / "n.st")):
        result = invoke(*command)
        assert result.exit_code == 1 and "corrupt Moments file" in result.output
    assert not (tmp_path / "n.st").exists()


@settings(max_examples=40)
@given(
    axis=st.sampled_from(["feature", "channel", "global"]),
    omit=st.booleans(),
    element=st.integers(0, 5),
    delta=st.one_of(st.integers(-5, 5), st.sampled_from([2**40, 2**62, 2**63 - 801])),
)
def test_any_changed_count_is_refused(axis, omit, element, delta, tmp_path_factory):
    x = np.random.default_rng(2).random((7, 2, 3))
    if omit:
        x[0, 0, 0] = x[3, 1, 2] = np.nan
    m = compute_stats(x, axis, nan_policy="omit" if omit else "raise")
    path = tmp_path_factory.mktemp("counts") / "m.st"
    m.save(path)
    meta, tensors = read_file(path)
    count = tensors["count"].reshape(-1).astype(object)
    i = element % count.size
    new = int(count[i]) + delta
    if delta == 0 or not 0 <= new < 2**63:
        return
    count[i] = new
    tensors["count"] = count.astype(np.int64).reshape(tensors["count"].shape)
    _write(meta, tensors, path)
    with pytest.raises(FileFormatError, match="count"):
        normlab.load(path)


def test_nonfinite_counts_without_omit_and_a_gram_unlike_its_moments_are_refused(tmp_path):
    x = np.random.default_rng(6).random((5, 3))
    compute_stats(x).save(tmp_path / "f.st")
    meta, tensors = read_file(tmp_path / "f.st")
    tensors["n_nonfinite"] = tensors["n_nonfinite"] + 1
    tensors["count"] = tensors["count"] - 1  # still count + n_nonfinite = samples
    with pytest.raises(FileFormatError, match="nan_policy='raise' stops at the first"):
        normlab.load(_write(meta, tensors, tmp_path / "bad.st"))
    c = CoMoments().update(np.arange(12, dtype=np.uint8).reshape(4, 3))
    c.save(tmp_path / "c.st")
    meta, tensors = read_file(tmp_path / "c.st")
    tensors["gram_limbs"] = tensors["gram_limbs"].copy()
    tensors["gram_limbs"][0, 0] += 1
    with pytest.raises(FileFormatError, match="corrupt gram"):
        normlab.load(_write(meta, tensors, tmp_path / "badc.st"))


@pytest.mark.parametrize("m2", [np.inf, 1e300, 50.0])
def test_float_variance_sums_beyond_the_range_are_refused(m2, tmp_path):
    x = np.random.default_rng(9).random((5, 2))  # range < 1: m2 ≤ 5
    compute_stats(x).save(tmp_path / "f.st")
    meta, tensors = read_file(tmp_path / "f.st")
    tensors["m2"] = np.array([m2, tensors["m2"][1]])
    with pytest.raises(FileFormatError, match="corrupt m2"):
        normlab.load(_write(meta, tensors, tmp_path / "bad.st"))


def test_weighted_and_mixed_shape_statistics_still_load(tmp_path):
    """What makes counts differ from samples × values is saved, so those files load."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 9, (6, 4, 4, 3), dtype=np.uint8)
    weighted = Moments("channel").update(x, sample_weight=[1, 2, 3, 1, 1, 5])
    mixed = Moments("channel").update(x) + Moments("channel").update(x[:, :2])
    both = Moments("global").update(x) + Moments("global").update(x[:, :1, :1, :1])
    fractional = Moments("feature").update(x[:, 0, 0], sample_weight=[0.5] * 6)
    for i, m in enumerate((weighted, mixed, both, fractional)):
        m.save(tmp_path / f"{i}.st")
        assert normlab.load(tmp_path / f"{i}.st") == m
    assert normlab.load(tmp_path / "1.st").count.tolist() == [96 + 48] * 3
    shown = invoke("show", tmp_path / "1.st")
    assert "channel (3 of HWC samples (4, 4, 3) and other shapes)" in shown.output


# ----------------------------------------------------------- 6. merges that mean nothing
@settings(max_examples=60)
@given(
    layouts=st.tuples(*[st.sampled_from([None, "HWC", "CHW", "HCW", "DHW"])] * 2),
    axes=st.tuples(*[st.sampled_from(["feature", "channel", "global"])] * 2),
    dtypes=st.tuples(*[st.sampled_from(["uint8", "int16"])] * 2),
    policies=st.tuples(*[st.sampled_from(["raise", "omit"])] * 2),
)
def test_a_merge_is_refused_unless_both_sides_describe_the_same_values(
    layouts, axes, dtypes, policies
):
    """Finding 6: per-feature HWC and CHW statistics merged, and a + b ≠ b + a."""
    rng = np.random.default_rng(4)
    # channel position of each layout in (3, 4, 3) samples; DHW has none (not per channel)
    position = {None: 2, "HWC": 2, "CHW": 0, "HCW": 1, "DHW": None}
    layouts = tuple(
        "HWC" if axis == "channel" and lay == "DHW" else lay
        for lay, axis in zip(layouts, axes, strict=True)
    )
    sides = []
    for lay, axis, dtype, policy in zip(layouts, axes, dtypes, policies, strict=True):
        x = rng.integers(0, 100, (5, 3, 4, 3)).astype(dtype)
        sides.append(compute_stats(x, axis, layout=lay, nan_policy=policy))
    a, b = sides
    same = (
        axes[0] == axes[1]
        and dtypes[0] == dtypes[1]
        and policies[0] == policies[1]
        and (axes[0] == "global" or position[layouts[0]] == position[layouts[1]])
    )
    if not same:
        with pytest.raises(MergeError):
            a + b
        with pytest.raises(MergeError):
            b + a
        return
    ab, ba = a + b, b + a
    assert ab == ba
    if axes[0] == "feature":
        assert ab.reduce("global") == ba.reduce("global")
        if position[layouts[0]] is not None:
            assert ab.reduce("channel") == ba.reduce("channel")


def test_hwc_and_chw_per_feature_statistics_never_merge():
    x = np.random.default_rng(5).integers(0, 256, (10, 3, 4, 3), dtype=np.uint8)
    a = compute_stats(x, "feature", layout="HWC")
    b = compute_stats(x, "feature", layout="CHW")
    for left, right in ((a, b), (b, a)):
        with pytest.raises(MergeError, match="HWC samples .* CHW samples|CHW samples .* HWC"):
            left + right
    assert (a + compute_stats(x, "feature")).layout == a.layout  # HWC is the default
    declared = Moments("feature", layout="CHW")  # empty, but its layout was said in full
    with pytest.raises(MergeError, match="CHW samples"):
        declared += a
    undeclared = Moments("feature")
    undeclared += b
    assert undeclared.layout == b.layout


def test_files_that_cannot_merge_are_refused_by_every_engine(tmp_path, dask_client):
    np.save(tmp_path / "u8.npy", np.ones((4, 3), np.uint8))
    np.save(tmp_path / "f.npy", np.ones((4, 3)))
    files = [str(tmp_path / "u8.npy"), str(tmp_path / "f.npy")]
    for engine in ("serial", "dask"):
        options = {"scheduler": dask_client} if engine == "dask" else {}
        with pytest.raises(MergeError, match="value scale"):
            compute_stats(files, engine=engine, **options)
    np.save(tmp_path / "h1.npy", HUGE[:2])
    np.save(tmp_path / "h2.npy", HUGE[2:])
    huge = [str(tmp_path / "h1.npy"), str(tmp_path / "h2.npy")]
    with pytest.raises(FloatOverflowError):
        compute_stats(huge, engine="dask", scheduler=dask_client)
    result = invoke("stats", *files, "-o", tmp_path / "m.st", "-q")
    assert result.exit_code == 1 and "value scale" in result.output
    assert not (tmp_path / "m.st").exists()


# ----------------------------------------------------------- the per-image std average
def test_per_image_std_average_leaves_nan_out_or_refuses(tmp_path):
    """Finding 4's class in ImageStats: NaN under omit made the per-image average NaN."""
    rng = np.random.default_rng(7)
    x = rng.random((4, 2, 2, 3))
    x[0, 0, 0, 0] = np.nan
    m = compute_stats(x, "channel", nan_policy="omit", per_image_std_average=True)
    expected = np.mean([np.nanstd(x[i].reshape(-1, 3), axis=0) for i in range(4)], axis=0)
    np.testing.assert_allclose(m.per_image_std_average, expected, rtol=1e-14)
    clean = rng.random((3, 2, 2, 3))
    got = compute_stats(clean, "channel", per_image_std_average=True).per_image_std_average
    assert (
        got.tolist() == np.mean([clean[i].reshape(-1, 3).std(axis=0) for i in range(3)], 0).tolist()
    )
    x[1, :, :, 2] = np.nan
    with pytest.raises(NormlabError, match="image 1 has no finite value in channel 2"):
        compute_stats(x, "channel", nan_policy="omit", per_image_std_average=True)


@pytest.mark.parametrize(
    "change",
    [
        lambda m, t: m["per_image_std_average"].__setitem__("n_images", 7),
        lambda m, t: m["per_image_std_average"].__setitem__("n_images", 0),
        lambda m, t: t.__setitem__("per_image_std_sum", t["per_image_std_sum"] * 1000),
        lambda m, t: t.__setitem__("per_image_std_sum", -t["per_image_std_sum"]),
    ],
)
def test_per_image_stds_are_checked_at_load(change, tmp_path):
    x = np.random.default_rng(8).integers(0, 255, (6, 4, 4, 3), dtype=np.uint8)
    m = compute_stats(x[:3], "channel", per_image_std_average=True, histogram=True)
    m += compute_stats(x[3:], "channel", per_image_std_average=True, histogram=True)
    m.save(tmp_path / "i.st")
    assert normlab.load(tmp_path / "i.st") == m
    meta, tensors = read_file(tmp_path / "i.st")
    change(meta, tensors)
    with pytest.raises(FileFormatError, match="corrupt ImageStats file .*(n_images|std_sum)"):
        normlab.load(_write(meta, tensors, tmp_path / "bad.st"))
