"""Files that load but are inconsistent, and declared sizes that must not be allocated."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from safetensors.numpy import save

import normlab
from normlab import Moments
from normlab.errors import FileFormatError, NormlabError
from normlab.io import read_file


def _rewrite(path, change) -> None:
    meta, tensors = read_file(path)
    change(meta, tensors)
    path.write_bytes(save(tensors, metadata={"normlab": json.dumps(meta)}))


def _limbs(values) -> np.ndarray:
    return np.array([[v] for v in values], np.int64)


@pytest.fixture()
def u8_stats(tmp_path):
    x = np.random.default_rng(0).integers(0, 10, (50, 3), dtype=np.uint8)
    path = tmp_path / "s.safetensors"
    Moments.from_array(x).save(path)
    return path


def test_issue_example_negative_variance_with_max_9_is_refused(u8_stats):
    def change(meta, t):  # Σx = 100·n, Σx² small: variance −10 000, mean 100 > max 9
        n = int(t["count"][0])
        t["s1_limbs"] = _limbs([100 * n] * 3)
        t["s2_limbs"] = _limbs([0] * 3)

    _rewrite(u8_stats, change)
    with pytest.raises(FileFormatError, match="impossible"):
        normlab.load(u8_stats)


CORRUPTIONS = {
    "variance below zero": lambda m, t: t.update(s2_limbs=_limbs([1, 1, 1])),
    "sum above count*max": lambda m, t: t.update(s1_limbs=_limbs([10**6] * 3)),
    "min above max": lambda m, t: t.update(min=t["max"] + 1),
    "nnz above count": lambda m, t: t.update(n_nonzero=t["count"] + 1),
    "fractional min": lambda m, t: t.update(min=t["min"] + 0.5),
    "sums without values": lambda m, t: t.update(count=np.zeros(3, np.int64)),
    "too many limbs": lambda m, t: t.update(s1_limbs=np.zeros((3, 5000), np.int64)),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_broken_invariant_is_a_file_format_error(u8_stats, name):
    _rewrite(u8_stats, CORRUPTIONS[name])
    with pytest.raises(FileFormatError):
        normlab.load(u8_stats)


def test_float_statistics_with_negative_m2_or_mean_outside_range(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 2))
    path = tmp_path / "f.safetensors"
    for change in (
        lambda m, t: t.update(m2=-np.abs(t["m2"])),
        lambda m, t: t.update(mean_shifted=t["mean_shifted"] + 100.0),
    ):
        Moments.from_array(x).save(path)
        _rewrite(path, change)
        with pytest.raises(FileFormatError):
            normlab.load(path)


def test_a_normalizer_with_broken_statistics_is_refused(tmp_path):
    x = np.random.default_rng(0).integers(0, 10, (50, 3), dtype=np.uint8)
    path = tmp_path / "z.safetensors"
    normlab.ZScore().fit(x).save(path)
    _rewrite(path, lambda m, t: t.update({"stats.s2_limbs": _limbs([0, 0, 0])}))
    with pytest.raises(FileFormatError):
        normlab.load(path)


def test_histogram_totals_must_match_the_counts(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)
    path = tmp_path / "h.safetensors"
    normlab.compute_stats(x, "channel", histogram=True).save(path)
    assert normlab.load(path).histogram.counts.sum() == x.size

    def change(m, t):
        t["histogram"] = t["histogram"].copy()
        t["histogram"][0, 0] += 5

    _rewrite(path, change)
    with pytest.raises(FileFormatError, match="histogram"):
        normlab.load(path)


# ---- declared sizes ------------------------------------------------------------------------


def _jpeg_declaring(width: int, height: int) -> bytes:
    Image = pytest.importorskip("PIL.Image")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("side", [20000, 60000, 3000])
def test_a_tiny_jpeg_declaring_a_huge_image_is_refused_before_decoding(tmp_path, side):
    path = tmp_path / "big.jpg"
    path.write_bytes(_jpeg_declaring(side, side))
    with pytest.raises(NormlabError, match="declares"):
        normlab.compute_stats(path)
    with pytest.raises(NormlabError, match="no samples"):
        normlab.compute_stats([path, path], skip_bad=True)


def test_resize_targets_are_bounded(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(NormlabError, match="resize"):
        normlab.compute_stats(tmp_path, resize=(100000, 100000))


def test_npz_member_declaring_more_than_it_holds(tmp_path):
    import zipfile

    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((4, 3), np.float32))
    with zipfile.ZipFile(path) as zf:
        raw = bytearray(zf.read("x.npy"))
    raw = bytes(raw).replace(b"(4, 3)", b"(4000000000, 3)".ljust(6))
    header_len = int.from_bytes(raw[8:10], "little")
    text = raw[10 : 10 + header_len].decode("latin1").replace("(4, 3)", "(9999999, 3)")
    body = np.lib.format.magic(1, 0) + len(text).to_bytes(2, "little") + text.encode("latin1")
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", body + b"\0" * 48)
    with pytest.raises(NormlabError, match="declares|truncated|corrupt"):
        normlab.compute_stats(path)
