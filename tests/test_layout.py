"""The one layout value, provenance beside the data, the one runner and the scheme registry."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import normlab
from normlab import schemes
from normlab.errors import MergeError, NormlabError, ShapeError, optional_import_failed
from normlab.histogram import Histogram
from normlab.imagestats import ImageStats
from normlab.layout import Layout
from normlab.moments import Moments
from normlab.normalizers import MaxAbs, MaxScale, MinMax, ZScore

RNG = np.random.default_rng(0)
NHWC = RNG.integers(0, 256, (12, 5, 4, 3), dtype=np.uint8)
NCHW = np.ascontiguousarray(NHWC.transpose(0, 3, 1, 2))
PER_CHANNEL = NHWC.reshape(-1, 3).astype(np.float64)


# ---------------------------------------------------------------------- one vocabulary
@pytest.mark.parametrize("layout", ["NCHW", "CHW", "nchw"])
def test_an_nchw_batch_asking_for_channels_gets_c_channels(layout):
    m = normlab.compute_stats(NCHW, "channel", layout=layout, chunk_size=5)
    assert m.reduced_shape == (3,)
    np.testing.assert_allclose(m.mean, PER_CHANNEL.mean(axis=0), rtol=1e-15)
    assert m == Moments("channel", layout=layout).update(NCHW)


def test_a_layout_of_another_rank_is_an_error_never_per_row_statistics():
    with pytest.raises(ShapeError, match="describes 3-d samples"):
        Moments("channel", layout="NCHW").update(NCHW[:, 0])  # gray (n, H, W): no C
    with pytest.raises(NormlabError, match="ambiguous.*NCHW"):
        Moments("channel", channel_axis=1)  # counted on samples, 1 was H of an NCHW batch
    with pytest.raises(NormlabError, match="no channels"):
        Moments("channel", layout="HW")


def test_the_deprecated_channel_axis_still_works_and_says_so():
    with pytest.warns(DeprecationWarning, match="layout='CHW'") as caught:
        m = Moments("channel", channel_axis=0).update(NCHW)
    assert caught[0].filename == __file__  # at the user's line
    assert m == Moments("channel", layout="CHW").update(NCHW)


def test_layout_translations():
    chw = Layout.parse("channel", layout="NCHW").bind((3, 5, 4))
    hwc = Layout.parse("channel").bind((5, 4, 3))
    assert (chw.letters, chw.keras_axis, chw.torch_layout) == ("CHW", 1, "CHW")
    assert (hwc.letters, hwc.keras_axis, hwc.torch_layout) == ("HWC", -1, "HWC")
    assert Layout.parse("feature").bind((5, 4, 3)).keras_axis == (1, 2, 3)
    assert Layout.parse("global").keras_axis is None
    assert hwc.coarser_than("feature") and not hwc.coarser_than("global")
    assert chw.broadcast(np.arange(3.0), 3).shape == (1, 3, 1, 1)


def test_normalizers_and_exports_speak_the_same_layout():
    z = ZScore(axis="channel", layout="NCHW").fit(NCHW)
    assert z.layout_.letters == "CHW"
    y = z.transform(NCHW)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-6)
    from normlab.export import to_keras

    assert to_keras(z)["axis"] == 1
    ref = ZScore(axis="channel").fit(NHWC)
    np.testing.assert_array_equal(ref.shift_, z.shift_)


# ---------------------------------------------------------------------- merges
def test_merges_compare_whole_layouts():
    chw = Moments("channel", layout="CHW").update(NCHW[:, :, :3, :3])  # (3, 3, 3)
    hwc = Moments("channel").update(NHWC[:, :3, :3, :])
    with pytest.raises(MergeError, match="CHW.*HWC"):
        chw + hwc
    with pytest.raises(MergeError, match="CHW.*HWC"):
        Histogram("channel", layout="CHW").update(NCHW[:, :, :3, :3]) + Histogram("channel").update(
            NHWC[:, :3, :3, :]
        )
    with pytest.raises(MergeError, match="rank|samples"):
        Moments("global").update(NHWC) + Moments("global").update(NHWC.reshape(12, -1))


def test_image_stats_extras_merge_only_over_the_same_samples():
    with_hist = ImageStats("channel", histogram=True).update(NHWC[:6])
    without = ImageStats("channel").update(NHWC[6:])
    with pytest.raises(MergeError, match="histogram"):
        with_hist + without
    stds = ImageStats("channel", per_image_std_average=True).update(NHWC[:6])
    with pytest.raises(MergeError, match="per-image std"):
        stds + ImageStats("channel").update(NHWC[6:])


def test_fit_from_stats_takes_their_layout(tmp_path):
    from typer.testing import CliRunner

    from normlab.cli import app

    stats = normlab.compute_stats(NCHW, "channel", layout="CHW")
    z = ZScore(axis="channel").fit_stats(stats)  # no layout repeated
    np.testing.assert_allclose(z.shift_, PER_CHANNEL.mean(axis=0), rtol=1e-15)
    stats.save(tmp_path / "chw.safetensors")
    out = tmp_path / "n.safetensors"
    result = CliRunner().invoke(
        app,
        [
            "fit",
            "--stats",
            str(tmp_path / "chw.safetensors"),
            "--scheme",
            "channel",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    loaded = normlab.load(out)
    assert loaded.layout_.letters == "CHW"
    np.testing.assert_array_equal(loaded.transform(NCHW), z.transform(NCHW))


# ---------------------------------------------------------------------- provenance, runner
def _images(folder, n=5):
    Image = pytest.importorskip("PIL.Image")
    folder.mkdir()
    arrays = []
    for i in range(n):
        a = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"{i}.png")
        arrays.append(a)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return np.stack(arrays)


def test_comoments_read_image_folders_with_the_image_options(tmp_path):
    x = _images(tmp_path / "img")
    with pytest.raises(normlab.errors.SourceError, match="broken.png"):
        normlab.compute_comoments(tmp_path / "img")
    c = normlab.compute_comoments(tmp_path / "img", skip_bad=True)
    assert c.n_skipped == 1 and c.skipped[0]["item"].endswith("broken.png")
    assert c == normlab.compute_comoments(x)
    gray = normlab.compute_comoments(tmp_path / "img", skip_bad=True, mode="L")
    assert gray.sample_shape == (6, 5, 1)


def test_comoments_checkpoint_and_resume_like_moments(tmp_path):
    x = RNG.normal(size=(300, 4))
    plain = normlab.compute_comoments(x, chunk_size=10)
    first = normlab.compute_comoments(x, chunk_size=10, checkpoint=tmp_path / "ck")
    again = normlab.compute_comoments(x, chunk_size=10, checkpoint=tmp_path / "ck")
    assert first == plain and again == plain


def test_cli_fit_zca_and_diagnose_read_image_folders(tmp_path):
    from typer.testing import CliRunner

    from normlab.cli import app

    _images(tmp_path / "img", n=8)
    out = tmp_path / "zca.safetensors"
    args = [str(tmp_path / "img"), "--skip-bad", "--mode", "L", "--resize", "4", "4", "-q"]
    fit = CliRunner().invoke(app, ["fit", *args, "--scheme", "zca", "-o", str(out)])
    assert fit.exit_code == 0, fit.output
    assert normlab.load(out).sample_shape_ == (4, 4, 1)
    diag = CliRunner().invoke(app, ["diagnose", *args, "--json"])
    assert diag.exit_code == 0, diag.output
    assert '"raw"' in diag.stdout


def test_a_list_of_nested_list_batches_keeps_every_sample():
    m = normlab.compute_stats([[[[1, 2]], [[3, 4]]]])
    assert m.n_samples_seen == 2 and m.mean.tolist() == [[2.0, 3.0]]
    pairs = [(np.arange(6.0).reshape(3, 2), np.zeros(3))]  # (inputs, labels)
    assert normlab.compute_stats(pairs).n_samples_seen == 3


# ---------------------------------------------------------------------- registry
def test_the_registry_says_what_each_scheme_needs():
    assert schemes.entry("zca").needs == frozenset({"comoments"})
    assert schemes.entry("clip-percentile").needs == frozenset({"moments", "histogram"})
    assert schemes.entry("raw").needs == frozenset()
    assert schemes.entry("channel").granularity == "channel"
    assert "layout" in schemes.entry("channel").options
    assert schemes.entry("channel").unusable_for((8, 8)) is not None
    with pytest.raises(NormlabError, match="takes no option layout"):
        schemes.get("max", layout="CHW")


def test_only_missing_optional_dependencies_count_as_unavailable():
    assert optional_import_failed(ImportError("no torch", name="torch"))
    assert not optional_import_failed(ImportError("bug", name="normlab.imagestats"))
    assert not optional_import_failed(ImportError("unknown"))


# ---------------------------------------------------------------------- small defects
def test_identity_zscore_is_named_raw():
    assert ZScore(with_mean=False, with_std=False).scheme == "raw"
    assert ZScore(with_std=False).scheme == "center"


@pytest.mark.parametrize("cls", [MaxAbs, MinMax, ZScore])
def test_parameters_are_validated_when_fitting_starts_for_every_normalizer(cls):
    norm = cls(axis="pixel")  # stored unchanged, as scikit-learn does
    with pytest.raises(NormlabError, match="axis must be one of"):
        norm.fit(NHWC)
    with pytest.raises(NormlabError, match="axis must be one of"):
        norm.fit_stats(Moments().update(NHWC))


def test_partial_fit_after_fitting_from_omit_statistics():
    x = RNG.normal(size=(40, 3))
    x[3, 1] = np.nan
    stats = Moments(nan_policy="omit").update(x[:20])
    z = ZScore().fit_stats(stats)
    z.partial_fit(x[20:])  # was a MergeError: the batch took nan_policy="raise"
    assert z.stats_ == stats + Moments(nan_policy="omit").update(x[20:])
    assert int(z.stats_.n_nonfinite.sum()) == 1


def test_from_stats_is_renamed_fit_stats():
    stats = Moments().update(RNG.normal(size=(10, 2)))
    with pytest.warns(DeprecationWarning, match="fit_stats"):
        old = ZScore().from_stats(stats)
    assert old == ZScore().fit_stats(stats)


def test_int64_data_divided_by_the_int64_range_is_said():
    x = RNG.integers(0, 4096, (20, 3)).astype(np.int64)
    with pytest.warns(normlab.NormlabWarning, match="max_value="):
        MaxScale().fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MaxScale(max_value=4095).fit(x)


def test_warnings_point_at_the_users_line_whatever_the_entry_point():
    x = np.zeros((10, 2), np.uint8)
    x[:5, 0] = 1
    for fit in (
        lambda: ZScore().fit(x),
        lambda: ZScore().partial_fit(x),
        lambda: ZScore().fit_stats(Moments().update(x)),
    ):
        with pytest.warns(normlab.NormlabWarning, match="zero variance") as caught:
            fit()
        assert caught[0].filename == __file__


def test_channels_first_batches_without_a_layout_are_named_at_every_entry_point():
    """An NCHW batch read as channels last would give per-column statistics: warn, and say
    layout='NCHW'; a declared layout (either way) is taken as said, silently."""
    import warnings

    x = np.random.default_rng(0).integers(0, 256, (6, 3, 4, 5), dtype=np.uint8)
    entry_points = {
        "Moments": lambda **kw: normlab.Moments("channel", **kw).update(x),
        "compute_stats": lambda **kw: normlab.compute_stats(x, "channel", **kw),
        "ZScore.fit": lambda **kw: normlab.ZScore(axis="channel", **kw).fit(x),
        "MinMax.fit": lambda **kw: normlab.MinMax(axis="channel", **kw).fit(x),
    }
    for name, run in entry_points.items():
        with pytest.warns(normlab.NormlabWarning, match="layout='NCHW'"):
            run()
        with warnings.catch_warnings():
            warnings.simplefilter("error", normlab.NormlabWarning)
            first = run(layout="NCHW")
            run(layout="NHWC")
        reduced = first.reduced_shape if hasattr(first, "reduced_shape") else first.shift_.shape
        assert reduced == (3,), name
