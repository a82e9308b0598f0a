"""Image folders: exact statistics against numpy references, modes, sizes, 16-bit, bad files."""

from __future__ import annotations

import os
import pickle
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import normlab
from normlab.engines import run_task
from normlab.errors import EmptyDataError, MissingExtraError, NormlabError, ShapeError, SourceError
from normlab.imagestats import ImageStats
from normlab.sources import resolve
from normlab.sources.images import FILES_PER_TASK

cv2 = pytest.importorskip("cv2")


def write_images(folder, arrays, fmt="png", **save):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(arrays):
        path = folder / f"{i:04d}.{fmt}"
        Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(
            path, **save
        )
        paths.append(path)
    return paths


def rgb(n, h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def pixels(arrays, channels):
    return np.concatenate([a.reshape(-1, channels) for a in arrays]).astype(np.float64)


@pytest.mark.parametrize("axis", ["feature", "channel", "global"])
def test_png_folder_matches_numpy(tmp_path, axis):
    x = rgb(9)
    write_images(tmp_path / "imgs", x)
    m = normlab.compute_stats(tmp_path / "imgs", axis)
    assert isinstance(m, ImageStats) and m.value_scale["dtype"] == "uint8" and m.exact
    ref = x.astype(np.float64)
    ref = {"feature": ref, "channel": ref.reshape(-1, 3), "global": ref.reshape(-1)}[axis]
    np.testing.assert_allclose(m.mean, ref.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(m.var(), ref.var(axis=0), rtol=1e-12)
    assert m.sample_shape == (6, 5, 3) if axis == "feature" else True


def test_jpeg_folder_matches_pillow_decode_and_recurses(tmp_path):
    x = rgb(5, 16, 16)
    write_images(tmp_path / "a", x[:3], "jpg", quality=90)
    write_images(tmp_path / "a" / "deeper", x[3:], "jpeg", quality=90)
    (tmp_path / "a" / "notes.txt").write_text("not an image, and ignored: no image suffix")
    m = normlab.compute_stats(tmp_path / "a", "channel")
    files = sorted(os.path.relpath(p, tmp_path / "a") for p in (tmp_path / "a").rglob("*.jp*g"))
    decoded = [np.asarray(Image.open(tmp_path / "a" / f).convert("RGB")) for f in files]
    assert m.n_samples_seen == 5
    np.testing.assert_allclose(m.mean, pixels(decoded, 3).mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(m.std(), pixels(decoded, 3).std(axis=0), rtol=1e-12)


def test_jpeg_without_simplejpeg_uses_pillow_same_result(tmp_path, monkeypatch):
    write_images(tmp_path / "j", rgb(4, 16, 16), "jpg", quality=90)
    with_sj = normlab.compute_stats(tmp_path / "j", "channel")
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # as if not installed
    without = normlab.compute_stats(tmp_path / "j", "channel")
    np.testing.assert_allclose(with_sj.mean, without.mean, atol=0.5)  # both libjpeg-turbo


def test_mixed_sizes_channel_ok_feature_names_two_files(tmp_path):
    small, big = rgb(2, 4, 4), rgb(2, 7, 5, seed=1)
    write_images(tmp_path / "m", [small[0], big[0], small[1], big[1]])
    m = normlab.compute_stats(tmp_path / "m", "channel")
    np.testing.assert_allclose(m.mean, pixels([*small, *big], 3).mean(axis=0), rtol=1e-15)
    with pytest.raises(ShapeError, match=r"0000\.png is 4x4x3.*0001\.png is 7x5x3.*resize"):
        normlab.compute_stats(tmp_path / "m", "feature")


def test_resize_gives_per_pixel_stats_like_pillow(tmp_path):
    small, big = rgb(2, 4, 4), rgb(2, 9, 7, seed=1)
    paths = write_images(tmp_path / "r", [*small, *big])
    m = normlab.compute_stats(tmp_path / "r", resize=(5, 6), interpolation="bicubic")
    ref = np.stack(
        [np.asarray(Image.open(p).resize((6, 5), Image.Resampling.BICUBIC)) for p in paths]
    )
    assert m.sample_shape == (5, 6, 3)
    np.testing.assert_allclose(m.mean, ref.astype(np.float64).mean(axis=0), rtol=1e-15)


def test_mixed_modes_error_names_one_file_of_each(tmp_path):
    colour = rgb(2)
    grey = colour[..., :1].copy()
    write_images(tmp_path / "mix", [colour[0], grey[0], colour[1]])
    with pytest.raises(SourceError, match=r"0000\.png is RGB 8-bit.*0001\.png is L 8-bit.*mode="):
        normlab.compute_stats(tmp_path / "mix", "channel")
    as_rgb = normlab.compute_stats(tmp_path / "mix", "channel", mode="RGB")
    ref = [colour[0], np.repeat(grey[0], 3, axis=2), colour[1]]
    np.testing.assert_allclose(as_rgb.mean, pixels(ref, 3).mean(axis=0), rtol=1e-15)
    as_l = normlab.compute_stats(tmp_path / "mix", "channel", mode="L")
    files = sorted((tmp_path / "mix").iterdir())
    ref_l = [np.asarray(Image.open(f).convert("L")) for f in files]  # Pillow's luma, exactly
    np.testing.assert_allclose(as_l.mean, pixels(ref_l, 1).mean(axis=0), rtol=1e-15)
    kept = normlab.compute_stats(tmp_path / "mix", "global", mode="keep")
    np.testing.assert_allclose(
        kept.mean, pixels([colour[0], grey[0], colour[1]], 1).mean(), rtol=1e-15
    )
    with pytest.raises(SourceError, match="mixed image modes"):
        normlab.compute_stats(tmp_path / "mix", "channel", mode="keep")


def test_mixed_modes_across_tasks_are_named_at_merge(tmp_path):
    n = FILES_PER_TASK + 3
    tiny = rgb(n, 2, 2)
    arrays = [a if i < FILES_PER_TASK else a[..., :1] for i, a in enumerate(tiny)]
    write_images(tmp_path / "t", arrays)
    src = resolve(tmp_path / "t")
    assert len(src.tasks) == 2
    with pytest.raises(
        SourceError, match=rf"0000\.png is RGB 8-bit.*{FILES_PER_TASK:04d}\.png is L 8-bit"
    ):
        normlab.compute_stats(tmp_path / "t", "channel")


def test_tasks_are_picklable_slices_and_give_the_same_bits(tmp_path):
    n = FILES_PER_TASK + 5
    write_images(tmp_path / "p", rgb(n, 3, 2))
    src = resolve(tmp_path / "p")
    assert [t.n_items for t in src.tasks] == [FILES_PER_TASK, 5]
    shipped = pickle.loads(pickle.dumps(src.tasks))
    make = lambda: ImageStats("channel")  # noqa: E731
    total = run_task(shipped[0], make)
    total += run_task(shipped[1], make)
    assert total == normlab.compute_stats(tmp_path / "p", "channel")


def test_sixteen_bit_png_and_tiff_stay_exact_uint16(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 65536, (4, 5, 6, 3), dtype=np.uint16)
    (tmp_path / "s").mkdir()
    for i, a in enumerate(x):
        ext = "png" if i % 2 else "tif"
        assert cv2.imwrite(str(tmp_path / "s" / f"{i}.{ext}"), a[..., ::-1])  # OpenCV writes BGR
    m = normlab.compute_stats(tmp_path / "s", "channel")
    assert m.value_scale == {"dtype": "uint16", "min_value": 0, "max_value": 65535} and m.exact
    s1 = x.reshape(-1, 3).astype(np.int64).sum(axis=0)
    assert [float(v) for v in m.mean] == [int(v) / x[..., 0].size for v in s1]  # correctly rounded
    # Pillow alone would read the 16-bit colour PNG as 8-bit:
    assert np.asarray(Image.open(tmp_path / "s" / "1.png")).dtype == np.uint8


def test_sixteen_bit_colour_png_without_opencv_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "s").mkdir()
    cv2.imwrite(str(tmp_path / "s" / "a.png"), np.full((3, 3, 3), 4000, np.uint16))
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingExtraError, match=r"a\.png.*normlab\[images\]"):
        normlab.compute_stats(tmp_path / "s", "channel")


def test_sixteen_bit_grey_without_opencv_via_pillow(tmp_path, monkeypatch):
    x = np.random.default_rng(4).integers(0, 65536, (3, 4, 4), dtype=np.uint16)
    (tmp_path / "g").mkdir()
    for i, a in enumerate(x):
        cv2.imwrite(str(tmp_path / "g" / f"{i}.png"), a)
    monkeypatch.setitem(sys.modules, "cv2", None)
    m = normlab.compute_stats(tmp_path / "g", "global")
    assert m.value_scale["dtype"] == "uint16"
    assert float(m.mean) == int(x.astype(np.int64).sum()) / x.size


def test_glob_file_list_and_txt_list(tmp_path):
    x = rgb(4)
    paths = write_images(tmp_path / "g", x[:2]) + write_images(tmp_path / "g2", x[2:], "bmp")
    only_png = normlab.compute_stats(tmp_path, "channel", glob="**/*.png")
    assert only_png.n_samples_seen == 2
    listed = normlab.compute_stats([str(paths[0]), str(paths[3])], "channel")
    np.testing.assert_allclose(listed.mean, pixels([x[0], x[3]], 3).mean(axis=0), rtol=1e-15)
    (tmp_path / "list.txt").write_text("# one path per line\ng/0000.png\n\ng2/0001.bmp\n")
    assert normlab.compute_stats(tmp_path / "list.txt", "channel") == listed


def write_bad_files(folder):
    write_images(folder, rgb(3))
    good = (folder / "0000.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    jpeg = folder / "full.jpg"
    Image.fromarray(rgb(1)[0]).save(jpeg, quality=90)
    (folder / "truncated.jpg").write_bytes(jpeg.read_bytes()[:200])
    jpeg.unlink()
    (folder / "text.png").write_text("this is not an image")
    (folder / "empty.gif").write_bytes(b"")
    os.mkfifo(folder / "fifo.png")  # opening it for reading would block forever
    os.symlink(folder / "gone.png", folder / "dangling.png")
    return ["dangling.png", "empty.gif", "fifo.png", "text.png", "truncated.jpg", "truncated.png"]


def test_bad_files_raise_naming_the_file(tmp_path):
    bad = write_bad_files(tmp_path / "b")
    for name in bad:
        folder = tmp_path / f"one-{name}"
        folder.mkdir()
        os.rename(tmp_path / "b" / name, folder / name)
        with pytest.raises(SourceError, match=name.replace(".", r"\.")):
            normlab.compute_stats(folder, "channel")


def test_skip_bad_lists_and_records_them(tmp_path):
    bad = write_bad_files(tmp_path / "b")
    with pytest.raises(SourceError):
        normlab.compute_stats(tmp_path / "b", "channel")
    m = normlab.compute_stats(tmp_path / "b", "channel", skip_bad=True)
    assert m.n_samples_seen == 3 and m.n_skipped == len(bad)
    assert sorted(os.path.basename(s["item"]) for s in m.skipped) == bad
    m.save(tmp_path / "stats.safetensors")
    meta, _ = normlab.io.read_file(tmp_path / "stats.safetensors")
    assert meta["skipped"]["count"] == len(bad)
    assert normlab.load(tmp_path / "stats.safetensors").n_skipped == len(bad)


def test_empty_folder_and_all_bad(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(EmptyDataError, match="no images found.*1 other file"):
        normlab.compute_stats(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_text("no")
    with pytest.raises(EmptyDataError, match="1 unreadable item"):
        normlab.compute_stats(tmp_path / "bad", skip_bad=True)


def test_bad_options(tmp_path):
    write_images(tmp_path / "o", rgb(1))
    with pytest.raises(NormlabError, match="mode"):
        normlab.compute_stats(tmp_path / "o", mode="CMYK")
    with pytest.raises(NormlabError, match="interpolation"):
        normlab.compute_stats(tmp_path / "o", resize=(2, 2), interpolation="cubic-ish")
    with pytest.raises(NormlabError, match="resize"):
        normlab.compute_stats(tmp_path / "o", resize=(0, 2))


def test_palette_and_rgba_images(tmp_path):
    x = rgb(2)
    (tmp_path / "p").mkdir()
    Image.fromarray(x[0]).convert("P").save(tmp_path / "p" / "a.png")
    rgba = np.concatenate([x[1], np.full((6, 5, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba).save(tmp_path / "p" / "b.png")
    m = normlab.compute_stats(tmp_path / "p", "channel", mode="RGB")
    ref = [np.asarray(Image.open(tmp_path / "p" / f).convert("RGB")) for f in ("a.png", "b.png")]
    np.testing.assert_allclose(m.mean, pixels(ref, 3).mean(axis=0), rtol=1e-15)


def test_per_image_std_average_vs_pooled(tmp_path):
    rng = np.random.default_rng(5)
    x = np.stack([rng.integers(lo, lo + 40, (8, 8, 3)) for lo in (0, 100, 200)]).astype(np.uint8)
    write_images(tmp_path / "s", x)
    m = normlab.compute_stats(tmp_path / "s", "channel", per_image_std_average=True)
    pooled = x.reshape(-1, 3).astype(np.float64).std(axis=0)
    averaged = x.reshape(3, -1, 3).astype(np.float64).std(axis=1).mean(axis=0)
    np.testing.assert_allclose(m.std(), pooled, rtol=1e-12)
    np.testing.assert_allclose(m.per_image_std_average, averaged, rtol=1e-12)
    assert (m.per_image_std_average < m.std() / 3).all()  # the recipe misses the spread of means
    m.save(tmp_path / "stats.safetensors")
    meta, _ = normlab.io.read_file(tmp_path / "stats.safetensors")
    assert "NOT the dataset std" in meta["per_image_std_average"]["label"]
    np.testing.assert_allclose(meta["per_image_std_average"]["values"], averaged, rtol=1e-12)


def test_cli_stats_on_an_image_folder(tmp_path):
    from typer.testing import CliRunner

    from normlab.cli import app

    x = rgb(4)
    write_images(tmp_path / "c", x)
    (tmp_path / "c" / "broken.png").write_text("nope")
    out = tmp_path / "s.safetensors"
    args = ["stats", str(tmp_path / "c"), "-o", str(out), "--axis", "channel", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "broken.png" in result.output
    more = [
        "--percentiles",
        "0.5,99.5",
        "--per-image-std-average",
        "--skip-bad",
        "--resize",
        "3",
        "4",
    ]
    result = CliRunner().invoke(app, args + more)
    assert result.exit_code == 0, result.output
    assert "NOT the dataset std" in result.output and "skipped" in result.output
    m = normlab.load(out)
    assert m.n_skipped == 1 and m.requested_percentiles == [0.5, 99.5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(
            app,
            [
                "fit",
                str(tmp_path / "c" / "0000.png"),
                "--scheme",
                "clip-percentile",
                "-o",
                str(tmp_path / "n.safetensors"),
            ],
        )
    assert result.exit_code == 0, result.output
    assert normlab.load(tmp_path / "n.safetensors").scheme == "clip-percentile"


def test_sixteen_bit_data_divided_by_255_warns(tmp_path):
    (tmp_path / "w").mkdir()
    cv2.imwrite(str(tmp_path / "w" / "a.png"), np.full((3, 3), 4000, np.uint16))
    m = normlab.compute_stats(tmp_path / "w", "global")
    with pytest.warns(normlab.NormlabWarning, match="16-bit"):
        normlab.schemes.from_stats("max", m, max_value=255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normlab.schemes.from_stats("max", m)  # 65535, the declared scale: no warning


def test_without_any_image_library_the_extra_is_named(tmp_path, monkeypatch):
    write_images(tmp_path / "n", rgb(2))
    for module in ("cv2", "simplejpeg", "PIL", "PIL.Image"):
        monkeypatch.setitem(sys.modules, module, None)  # as if normlab[images] were not installed
    with pytest.raises(MissingExtraError, match=r"normlab\[images\]"):
        normlab.compute_stats(tmp_path / "n", "channel")


def test_batches_kept_by_the_consumer_are_never_overwritten(tmp_path):
    x = rgb(10, 4, 4)
    write_images(tmp_path / "k", x)
    task = resolve(tmp_path / "k", chunk_size=3).tasks[0]
    kept = [c for c in task.chunks() if isinstance(c, np.ndarray)]
    np.testing.assert_array_equal(np.concatenate(kept), x)
    views = [c[:1] for c in task.chunks() if isinstance(c, np.ndarray)]  # views keep the base alive
    np.testing.assert_array_equal(np.concatenate(views), x[[0, 3, 6, 9]])


def test_worker_processes_give_the_same_bits(tmp_path):
    from normlab.engines import ENGINES

    if "local" not in ENGINES:
        pytest.skip("no process engine")
    write_images(tmp_path / "w", rgb(FILES_PER_TASK + 7, 3, 3))
    (tmp_path / "w" / "bad.png").write_text("not an image")
    options = dict(percentiles=(1, 99), per_image_std_average=True, skip_bad=True, progress=False)
    serial = normlab.compute_stats(tmp_path / "w", "channel", **options)
    local = normlab.compute_stats(tmp_path / "w", "channel", engine="local", workers=2, **options)
    assert local == serial and local.n_skipped == 1


# ---------------------------------------------------------------------- found by a hostile test
def _png(path, value, size=4, channels=3):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((size, size, channels), value, np.uint8))


def test_symlinked_folders_are_followed_and_each_real_file_read_once(tmp_path):
    """A linked subfolder is read (it was skipped unnoticed); a loop terminates and is named;
    a second link to a folder or a file already read does not read it twice."""
    root, ext = tmp_path / "sl", tmp_path / "ext"
    _png(root / "real" / "0.png", 0)
    _png(ext / "0.png", 200)
    _png(ext / "1.png", 200)
    os.symlink(ext, root / "ext")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing repeated: no warning
        m = normlab.compute_stats(root, "channel")
    assert m.n_samples_seen == 3
    np.testing.assert_allclose(m.mean, [400 / 3] * 3, rtol=1e-15)
    os.symlink(root, ext / "loop")  # sl/ext/loop -> sl: a loop
    os.symlink(ext, root / "real" / "again")  # a second link to ext
    os.symlink(ext / "1.png", root / "real" / "dup.png")  # a link to a file read already
    with pytest.warns(normlab.NormlabWarning) as record:
        again = normlab.compute_stats(root, "channel")
    messages = " | ".join(str(w.message) for w in record)
    assert "loop (the folder" in messages and "again (the folder" in messages, messages
    assert "dup.png (the file" in messages, messages
    assert again.n_samples_seen == 3 and np.array_equal(again.mean, m.mean)
    with pytest.warns(normlab.NormlabWarning):
        src = resolve(root, axis="channel")
    assert src.info["n_files"] == 3 and src.info["ignored_files"] == 1
    # a path pattern follows the links too
    with pytest.warns(normlab.NormlabWarning):
        by_glob = normlab.compute_stats(root, "channel", glob="**/*.png")
    assert by_glob.n_samples_seen == 3


def test_hidden_files_follow_one_rule_with_and_without_glob(tmp_path):
    """A wildcard never matches a leading dot (as in a shell), by default, with a name pattern
    and with a path pattern; a pattern that spells the dot picks hidden names."""
    _png(tmp_path / "a" / "0.png", 10)
    _png(tmp_path / "a" / ".1.png", 250)
    _png(tmp_path / ".cache" / "2.png", 250)
    for glob in (None, "*.png", "**/*.png", "a/*.png", "*/*"):
        m = normlab.compute_stats(tmp_path, "global", glob=glob)
        assert m.n_samples_seen == 1 and float(m.mean) == 10.0, glob
    assert normlab.compute_stats(tmp_path, "global", glob=".*.png").mean == 250.0
    assert normlab.compute_stats(tmp_path, "global", glob="a/.*").mean == 250.0
    hidden = normlab.compute_stats(tmp_path, "global", glob=".cache/*.png")
    assert hidden.mean == 250.0
    src = resolve(tmp_path, glob="**/*.png")
    assert src.info["ignored_files"] == 1  # .1.png, counted as the default listing counts it


def _corrupt_idat(path):
    """A PNG whose IDAT deflate stream is broken and whose CRC is recomputed (libpng reports
    ``invalid block type``/``invalid distance`` itself, on stderr)."""
    import struct
    import zlib

    data = bytearray(path.read_bytes())
    at = data.find(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 6 : at + 4 + length] = b"\xff" * (length - 2)  # past the 2-byte zlib header
    crc = zlib.crc32(bytes(data[at : at + 4 + length]))
    data[at + 4 + length : at + 8 + length] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def _with_bad_ancillary_chunk(path):
    """A valid PNG plus a text chunk with a wrong CRC: libpng prints a warning and decodes."""
    import struct

    data = path.read_bytes()
    chunk = struct.pack(">I", 3) + b"tEXtk\x00v" + b"\x00\x00\x00\x00"
    path.write_bytes(data[:33] + chunk + data[33:])


def test_decoder_libraries_print_nothing_on_stderr(tmp_path):
    """Only normlab's own error names a corrupt PNG: libpng's stray stderr lines are kept off
    the terminal (a subprocess: the CLI as a user runs it)."""
    import subprocess

    _png(tmp_path / "bad" / "0.png", 7, size=32)
    _corrupt_idat(tmp_path / "bad" / "0.png")
    _png(tmp_path / "warn" / "0.png", 9, size=8)
    _with_bad_ancillary_chunk(tmp_path / "warn" / "0.png")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = [sys.executable, "-m", "normlab.cli", "stats", "--axis", "global"]
    bad = subprocess.run(
        [*run, str(tmp_path / "bad"), "-o", str(tmp_path / "b.st")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "0.png" in lines[0], lines
    good = subprocess.run(
        [*run, str(tmp_path / "warn"), "-o", str(tmp_path / "w.st"), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert good.returncode == 0 and "libpng" not in good.stderr + good.stdout, good.stderr


def test_stderr_is_restored_and_other_writes_kept_across_threads(tmp_path, capfd):
    for i in range(12):
        _png(tmp_path / f"{i:02d}.png", i, size=16)
    for i in range(0, 12, 3):
        _corrupt_idat(tmp_path / f"{i:02d}.png")
    for engine, workers in (("serial", None), ("local", 4)):
        m = normlab.compute_stats(tmp_path, "global", skip_bad=True, engine=engine, workers=workers)
        assert m.n_samples_seen == 8 and m.n_skipped == 4
    os.write(2, b"written after decoding\n")
    err = capfd.readouterr().err
    assert "libpng" not in err and "written after decoding" in err, err


def test_every_page_of_a_multi_page_tiff_is_a_sample(tmp_path):
    """The issue's case: three pages of 0, 100 and 200 (only the first was read: mean 0)."""
    (tmp_path / "mt").mkdir()
    pages = [np.full((5, 5), v, np.uint8) for v in (0, 100, 200)]
    assert cv2.imwritemulti(str(tmp_path / "mt" / "0.tif"), pages)
    m = normlab.compute_stats(tmp_path / "mt", "channel")
    assert m.n_samples_seen == 3 and m.mean.tolist() == [100.0] and m.max.tolist() == [200]
    # 16-bit colour pages keep 16 bits (OpenCV reads the pages)
    deep = [np.full((4, 6, 3), v, np.uint16) for v in (0, 1000, 60000)]
    assert cv2.imwritemulti(str(tmp_path / "deep.tif"), deep)
    m = normlab.compute_stats([str(tmp_path / "deep.tif")], "channel")
    assert m.n_samples_seen == 3 and m.exact and m.max.tolist() == [60000] * 3
    assert m.mean.tolist() == [61000 / 3] * 3


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP"])
def test_every_frame_of_an_animated_image_is_a_sample(tmp_path, fmt):
    frames = [Image.fromarray(np.full((5, 7, 3), v, np.uint8)) for v in (0, 100, 200)]
    path = tmp_path / "a" / f"anim.{fmt.lower()}"
    path.parent.mkdir()
    extra = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], **extra)
    assert Image.open(path).n_frames == 3
    m = normlab.compute_stats(path.parent, "channel")
    assert m.n_samples_seen == 3 and m.mean.tolist() == [100.0] * 3
    # a still image of the same format is one sample, as before
    frames[1].save(path.parent / f"still.{fmt.lower()}", fmt, **extra)
    m = normlab.compute_stats(path.parent, "channel")
    assert m.n_samples_seen == 4 and m.mean.tolist() == [100.0] * 3


def _set_subfile_types(path, values):
    """Set each page's NewSubfileType tag (254) of a little-endian TIFF in place."""
    import struct

    data = bytearray(path.read_bytes())
    ifd = struct.unpack("<I", data[4:8])[0]
    for value in values:
        (n,) = struct.unpack("<H", data[ifd : ifd + 2])
        for k in range(n):
            at = ifd + 2 + 12 * k
            if struct.unpack("<H", data[at : at + 2])[0] == 254:
                data[at + 8 : at + 12] = struct.pack("<I", value)
        ifd = struct.unpack("<I", data[ifd + 2 + 12 * n : ifd + 6 + 12 * n])[0]
    path.write_bytes(bytes(data))


def test_reduced_resolution_tiff_pages_are_not_samples(tmp_path):
    pages = [Image.fromarray(np.full(s, v, np.uint8)) for s, v in (((8, 8), 10), ((4, 4), 250))]
    pages.append(Image.fromarray(np.full((8, 8), 30, np.uint8)))
    path = tmp_path / "p" / "pyramid.tif"
    path.parent.mkdir()
    pages[0].save(path, "TIFF", save_all=True, append_images=pages[1:], tiffinfo={254: 1})
    _set_subfile_types(path, [0, 1, 0])  # page 1: a thumbnail of page 0
    m = normlab.compute_stats(path.parent, "global")
    assert m.n_samples_seen == 2 and float(m.mean) == 20.0 and float(m.max) == 30.0


def test_a_broken_multi_page_file_is_skipped_whole(tmp_path):
    pages = [np.full((64, 64), v, np.uint8) for v in (50, 60, 70)]
    cv2.imwritemulti(str(tmp_path / "0.tif"), pages)
    data = (tmp_path / "0.tif").read_bytes()
    (tmp_path / "0.tif").write_bytes(data[: len(data) * 2 // 3])
    _png(tmp_path / "1.png", 9, size=64, channels=1)
    with pytest.raises(SourceError, match=r"0\.tif"):
        normlab.compute_stats(tmp_path, "global")
    m = normlab.compute_stats(tmp_path, "global", skip_bad=True)
    assert m.n_samples_seen == 1 and float(m.mean) == 9.0 and m.n_skipped == 1


def test_a_process_forked_while_a_decoder_runs_decodes_quietly(tmp_path, capfd):
    """A fork while another thread holds the stderr guard: the child writes to the real
    stderr at once (not into the parent's capture file) and never waits on the guard's lock."""
    import threading

    from normlab.sources.images import _C_STDERR, BadImage, decode_image

    _png(tmp_path / "0.png", 7, size=32)
    _corrupt_idat(tmp_path / "0.png")
    data = (tmp_path / "0.png").read_bytes()
    entered, release = threading.Event(), threading.Event()

    def hold():
        with _C_STDERR:
            entered.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    entered.wait(60)
    pid = os.fork()
    if pid == 0:  # the child: decode, say so on stderr, leave at once
        try:
            decode_image(data, "0.png")
        except BadImage as exc:
            os.write(2, f"child decoded: {exc}\n".encode())
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    err = capfd.readouterr().err  # the parent's guard still holds its capture file
    release.set()
    thread.join()
    assert status == 0
    assert "child decoded: corrupt or truncated PNG" in err and "libpng" not in err, err


def test_an_error_names_a_single_image_once_and_a_folders_range(tmp_path):
    """`bad.png [0:1]: bad.png: corrupt …` named the one file twice; a folder keeps its range."""
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nGARBAGE")
    with pytest.raises(normlab.NormlabError) as single:
        normlab.compute_stats(str(bad), "channel")
    assert str(single.value) == f"{bad}: corrupt or truncated PNG"
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "0.png")
    (folder / "1.png").write_bytes(bad.read_bytes())
    with pytest.raises(normlab.NormlabError) as many:
        normlab.compute_stats(str(folder), "channel")
    assert str(many.value).startswith(f"images under {folder} [0:2]: {folder / '1.png'}: corrupt")
