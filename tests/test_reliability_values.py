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
