"""Values the dtype allows but code may not expect: non-canonical bools, grey+alpha images."""

from __future__ import annotations

import numpy as np
import pytest

import normlab
from normlab import Moments, ZScore


def _odd_bools() -> np.ndarray:
    return np.frombuffer(bytes([0, 2, 255, 1, 0, 7, 0, 1]), dtype=bool).reshape(4, 2)


def test_non_canonical_bools_count_as_true_everywhere():
    x = _odd_bools()
    canonical = x.view(np.uint8) != 0
    m = Moments.from_array(x)
    assert m == Moments.from_array(canonical)
    np.testing.assert_array_equal(m.mean, canonical.mean(axis=0))
    assert normlab.compute_stats(x, chunk_size=1) == m
    z = ZScore().fit(x)
    np.testing.assert_array_equal(z.transform(x), z.transform(canonical))
    assert normlab.compute_comoments(x).moments == Moments.from_array(canonical)


def test_issue_example_mean_is_three_quarters():
    x = np.frombuffer(bytes([0, 2, 255, 1]), bool).reshape(4, 1)
    assert Moments.from_array(x).mean.tolist() == [0.75]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_grey_alpha_is_kept_as_stored_by_every_container(tmp_path, fmt):
    Image = pytest.importorskip("PIL.Image")
    from normlab.sources.images import ImageOptions, load_image

    a = np.zeros((4, 5, 2), np.uint8)
    a[..., 0] = np.arange(20).reshape(4, 5)
    a[..., 1] = 200
    path = tmp_path / f"la.{fmt.lower()}"
    Image.fromarray(a, "LA").save(path, fmt)
    arr, mode, _ = load_image(str(path), ImageOptions("keep", None, "bilinear", False, None))
    np.testing.assert_array_equal(arr, a)
    rgb, _, _ = load_image(str(path), ImageOptions("RGB", None, "bilinear", False, None))
    np.testing.assert_array_equal(rgb, np.repeat(a[..., :1], 3, axis=2))


def test_png_and_tiff_of_the_same_pixels_give_the_same_statistics(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for fmt in ("PNG", "TIFF"):
        folder = tmp_path / fmt
        folder.mkdir()
        for i in range(3):
            a = rng.integers(0, 256, (6, 7, 2), dtype=np.uint8)
            Image.fromarray(a, "LA").save(folder / f"{i}.{fmt.lower()}", fmt)
        rng = np.random.default_rng(0)
    png = normlab.compute_stats(tmp_path / "PNG", "channel", mode="keep")
    tif = normlab.compute_stats(tmp_path / "TIFF", "channel", mode="keep")
    np.testing.assert_array_equal(png.mean, tif.mean)
    assert png.mean.shape == (2,)


def test_extreme_floats_give_finite_statistics_or_a_clear_error():
    from normlab.errors import NormlabError

    x = np.array([[1e308], [-1e308]])
    with pytest.raises(NormlabError, match="overflow|exceed"):
        Moments.from_array(x)
    with pytest.raises(NormlabError):
        ZScore().fit(x)
    big = np.array([[1e150], [-1e150], [0.0]])
    z = normlab.MinMax().fit(big)
    assert np.isfinite(z.transform(big)).all()


def test_infinite_scale_is_not_zero_variance():
    from normlab.errors import NormlabError
    from normlab.normalizers import safe_scale

    with pytest.raises(NormlabError, match="infinite scale"):
        safe_scale(np.array([np.inf, 1.0]), np.array([False, False]))


def test_outputs_beyond_the_output_dtype_are_an_error_not_inf():
    from normlab.errors import NormlabError

    fit_on = np.array([[0.0], [1.0]])
    with pytest.raises(NormlabError, match="exceed the range of float32"):
        ZScore(dtype=np.float32).fit(fit_on).transform(np.array([[1e300]]))
    z = ZScore().fit(fit_on)  # float64 output holds it
    assert np.isfinite(z.transform(np.array([[1e300]]))).all()


def test_nonfinite_error_counts_the_input_and_names_the_global_row(tmp_path):
    from normlab.errors import NonFiniteError

    x = np.zeros((40000, 3))
    x[15000, 1] = np.nan
    x[15500:15510, 2] = np.inf
    path = tmp_path / "x.npy"
    np.save(path, x)
    for source in (x, path):
        with pytest.raises(NonFiniteError, match=r"^11 non-finite .* row 15000 of the input"):
            normlab.compute_stats(source, chunk_size=1000)
    x[39999, 0] = -np.inf  # a later task: counted too
    with pytest.raises(NonFiniteError, match=r"^12 non-finite .* \(40000 rows read\)"):
        normlab.compute_stats(x, chunk_size=1000)


def test_nonfinite_values_of_a_table_name_the_column_not_its_place_in_a_part():
    """Integer and float columns are read apart: the message names the column, not index 0."""
    pd = pytest.importorskip("pandas")
    from normlab.errors import NonFiniteError

    frame = pd.DataFrame({"i": np.arange(10), "f": np.arange(10.0)})
    frame.loc[7, "f"] = np.nan
    with pytest.raises(NonFiniteError, match=r"first in row 7 of the input .* in column 'f'"):
        normlab.compute_stats(frame)


def test_odd_tables_get_messages_about_what_they_are():
    pd = pytest.importorskip("pandas")
    from normlab.errors import DTypeError

    with pytest.raises(DTypeError, match="no numeric column \\(it has no columns at all\\)"):
        normlab.compute_stats(pd.DataFrame())
    # a Series is one feature (it used to read as an iterable of 0-d "batches")
    assert normlab.compute_stats(pd.Series([1.0, 2.0], name="a")).mean.tolist() == [1.5]
    with pytest.raises(DTypeError, match="pandas Series: no numeric column"):
        normlab.compute_stats(pd.Series(["a", "b"]))


def test_a_script_without_main_guard_is_explained(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(
        "import numpy as np, normlab\n"
        "print(normlab.compute_stats(np.zeros((1000, 4)), engine='local', workers=2).mean)\n"
    )
    env = {
        **__import__("os").environ,
        "PYTHONPATH": str(__import__("pathlib").Path(normlab.__file__).parent.parent),
    }
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode != 0
    assert "__main__" in done.stderr and "guard" in done.stderr
