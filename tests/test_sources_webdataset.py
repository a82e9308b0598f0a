"""WebDataset shards: the same statistics as the same images in a folder, bounded tasks, tar
headers read by normlab (long names, pax), errors naming the shard and member."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import normlab
from normlab.errors import SourceError
from normlab.sources import resolve
from normlab.sources.images import FILES_PER_TASK
from normlab.sources.webdataset import expand_braces, index_shard

cv2 = pytest.importorskip("cv2")


def encode(arr: np.ndarray, fmt: str) -> bytes:
    if fmt == "png16":
        ok, data = cv2.imencode(".png", arr)
        assert ok
        return data.tobytes()
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format={"jpg": "JPEG", "png": "PNG"}[fmt])
    return buffer.getvalue()


def write_corpus(
    root: Path, images: list[bytes], ext: str, n_shards: int, tar_format: int = tarfile.GNU_FORMAT
) -> tuple[Path, str]:
    """The images as a folder and as ``n_shards`` WebDataset shards (with .cls labels)."""
    folder = root / "folder"
    folder.mkdir(parents=True)
    per_shard = -(-len(images) // n_shards)
    for shard in range(n_shards):
        with tarfile.open(root / f"shard-{shard:03d}.tar", "w", format=tar_format) as tar:
            for i in range(shard * per_shard, min((shard + 1) * per_shard, len(images))):
                key = f"sample{i:05d}"
                (folder / f"{key}.{ext}").write_bytes(images[i])
                for name, data in ((f"{key}.{ext}", images[i]), (f"{key}.cls", b"%d" % (i % 3))):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder, str(root / f"shard-{{000..{n_shards - 1:03d}}}.tar")


def same(a: normlab.Moments, b: normlab.Moments) -> bool:
    return (
        a.n_samples_seen == b.n_samples_seen
        and np.array_equal(a.mean, b.mean)
        and np.array_equal(a.var(), b.var())
    )


@pytest.mark.parametrize("fmt", ["jpg", "png16"])
def test_shards_give_the_folder_statistics(tmp_path, fmt):
    rng = np.random.default_rng(1)
    if fmt == "jpg":
        arrays = rng.integers(0, 256, (40, 12, 10, 3), dtype=np.uint8)
    else:
        arrays = rng.integers(0, 65536, (40, 12, 10, 3), dtype=np.uint16)
    folder, pattern = write_corpus(
        tmp_path, [encode(a, fmt) for a in arrays], "png" if fmt == "png16" else "jpg", 3
    )
    for axis in ("feature", "channel"):
        from_folder = normlab.compute_stats(folder, axis, histogram=(fmt == "jpg"))
        from_shards = normlab.compute_stats(pattern, axis, histogram=(fmt == "jpg"))
        assert same(from_shards, from_folder)
        assert from_shards.value_scale == from_folder.value_scale
    if fmt == "png16":
        assert from_shards.value_scale["dtype"] == "uint16"  # 16 bits kept
    else:
        assert np.array_equal(from_shards.percentile(99.5), from_folder.percentile(99.5))
    on_two = normlab.compute_stats(pattern, "channel", engine="local", workers=2)
    assert same(on_two, from_shards)


def test_tasks_hold_a_bounded_number_of_members(tmp_path):
    image = encode(np.zeros((4, 4, 3), np.uint8), "png")
    n = FILES_PER_TASK * 2 + 5
    _, pattern = write_corpus(tmp_path, [image] * n, "png", 1)
    source = resolve(pattern)
    assert [t.n_items for t in source.tasks] == [FILES_PER_TASK, FILES_PER_TASK, 5]
    assert source.info["ignored_files"] == n  # the .cls labels
    assert "shard-000.tar members [256:512]" in source.tasks[1].label


def test_headers_read_by_hand_match_tarfile(tmp_path):
    """GNU long names, pax paths, ustar prefixes, directories and links."""
    payloads = {
        "a" * 120 + "/" + "b" * 30 + ".png": b"x" * 700,
        "short.jpg": b"",
        "dir/é-ünïcode.png": b"y" * 512,
        "p" * 90 + "/" + "q" * 60 + ".jpg": b"z" * 3,
    }
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT):
        path = tmp_path / f"t{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            tar.addfile(tarfile.TarInfo("dir"))  # a regular empty file named like a folder
            folder = tarfile.TarInfo("folder")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
            for name, data in payloads.items():
                if fmt == tarfile.USTAR_FORMAT and len(name.split("/")[-1]) > 100:
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            link = tarfile.TarInfo("link.png")
            link.type = tarfile.SYMTYPE
            link.linkname = "short.jpg"
            tar.addfile(link)
        members, damaged = index_shard(str(path))
        assert damaged is None
        with tarfile.open(path) as tar, open(path, "rb") as raw:
            expected = [(m.name, m.size) for m in tar.getmembers() if m.isfile()]
            assert [(m.name, m.size) for m in members] == expected
            for m in members:
                raw.seek(m.offset)
                assert raw.read(m.size) == tar.extractfile(m.name).read()


def test_brace_patterns():
    assert expand_braces("s-{8..11}.tar") == ["s-8.tar", "s-9.tar", "s-10.tar", "s-11.tar"]
    assert expand_braces("s-{098..100}.tar") == ["s-098.tar", "s-099.tar", "s-100.tar"]
    assert expand_braces("{train,val}-{0..1}.tar") == [
        "train-0.tar",
        "train-1.tar",
        "val-0.tar",
        "val-1.tar",
    ]
    with pytest.raises(SourceError, match="cannot expand"):
        expand_braces("s-{x}.tar")


def test_bad_members_are_named_and_skipped(tmp_path):
    rng = np.random.default_rng(2)
    good = [encode(a, "png") for a in rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)]
    images = [*good[:2], good[2][:60], *good[3:5], b"not an image at all", good[5]]
    folder, pattern = write_corpus(tmp_path, images, "png", 2)
    with pytest.raises(SourceError, match=r"shard-000\.tar\[sample00002\.png\]: corrupt"):
        normlab.compute_stats(pattern)
    stats = normlab.compute_stats(pattern, skip_bad=True)
    assert stats.n_samples_seen == 5 and stats.n_skipped == 2
    assert sorted(s["item"].rsplit("/", 1)[-1] for s in stats.skipped) == [
        "shard-000.tar[sample00002.png]",
        "shard-001.tar[sample00005.png]",
    ]
    assert same(stats, normlab.compute_stats(folder, skip_bad=True))


def test_damaged_shards(tmp_path):
    rng = np.random.default_rng(3)
    images = [encode(a, "png") for a in rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)]
    _, pattern = write_corpus(tmp_path, images, "png", 1)
    shard = tmp_path / "shard-000.tar"
    data = bytearray(shard.read_bytes())
    members, _ = index_shard(str(shard))
    damaged_at = members[6].offset - 512  # the header of the 4th image (after 3 image+label pairs)
    data[damaged_at + 10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(
        SourceError,
        match=rf"corrupt tar header at byte {damaged_at} after "
        r"sample00002\.cls; pass skip_bad=True",
    ):
        normlab.compute_stats(pattern)
    stats = normlab.compute_stats(pattern, skip_bad=True)
    assert stats.n_samples_seen == 3 and stats.n_skipped == 1
    assert "the rest of the shard" in str(stats.skipped[0]["reason"])
    shard.write_bytes(bytes(data[: members[2].offset + 10]))  # cut inside a member
    with pytest.raises(SourceError, match=r"sample00001\.png runs past the end of the file"):
        normlab.compute_stats(pattern)
    with pytest.raises(SourceError, match="no such shard"):
        normlab.compute_stats(str(tmp_path / "shard-{001..002}.tar"))


def test_shards_without_images(tmp_path):
    with tarfile.open(tmp_path / "labels.tar", "w") as tar:
        info = tarfile.TarInfo("0.cls")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
    with pytest.raises(SourceError, match=r"no images found .*1 other member"):
        resolve(str(tmp_path / "labels.tar"))


def test_shards_at_an_fsspec_url(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    rng = np.random.default_rng(4)
    images = [encode(a, "png") for a in rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)]
    folder, _ = write_corpus(tmp_path, images, "png", 2)
    memory = fsspec.filesystem("memory")
    for shard in ("shard-000.tar", "shard-001.tar"):
        memory.pipe(f"/normlab-wds/{shard}", (tmp_path / shard).read_bytes())
    remote = normlab.compute_stats("memory://normlab-wds/shard-{000..001}.tar", "channel")
    assert same(remote, normlab.compute_stats(folder, "channel"))
    globbed = normlab.compute_stats("memory://normlab-wds/shard-*.tar", "channel")
    assert same(globbed, remote)
    local = normlab.compute_stats(str(tmp_path / "shard-*.tar"), "channel")
    assert same(local, remote)
    assert [t.shard for t in resolve(str(tmp_path / "shard-00[10].tar")).tasks] == [
        str(tmp_path / "shard-000.tar"),
        str(tmp_path / "shard-001.tar"),
    ]
    with pytest.raises(SourceError, match=r"nope-\*\.tar: no shard matches this pattern"):
        resolve(str(tmp_path / "nope-*.tar"))


def test_shards_on_an_s3_server(tmp_path, s3):
    """Shards on a real S3-compatible server: worker processes read them from the server; a
    corrupt member is named by its URL, or skipped and listed."""
    import fsspec

    rng = np.random.default_rng(9)
    good = [encode(a, "png") for a in rng.integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)]
    folder, _ = write_corpus(tmp_path / "good", good, "png", 2)
    _, _ = write_corpus(tmp_path / "bad", [*good[:5], good[5][:40], good[6]], "png", 2)
    s3fs = fsspec.filesystem("s3", **s3)
    s3fs.mkdir("normlab-wds")
    for shard in ("shard-000.tar", "shard-001.tar"):
        s3fs.put(str(tmp_path / "good" / shard), f"normlab-wds/good/{shard}")
        s3fs.put(str(tmp_path / "bad" / shard), f"normlab-wds/bad/{shard}")
    reference = normlab.compute_stats(folder, "channel")
    pattern = "s3://normlab-wds/{}/shard-{{000..001}}.tar"
    for engine in ({"engine": "serial"}, {"engine": "local", "workers": 2}):
        got = normlab.compute_stats(pattern.format("good"), "channel", storage_options=s3, **engine)
        assert same(got, reference), engine
        skipping = normlab.compute_stats(
            pattern.format("bad"), "channel", storage_options=s3, skip_bad=True, **engine
        )
        assert [s["item"] for s in skipping.skipped] == [
            "s3://normlab-wds/bad/shard-001.tar[sample00005.png]"
        ]
        assert skipping.n_samples_seen == 6
    with pytest.raises(SourceError, match=r"s3://normlab-wds/bad/shard-001\.tar\[sample00005"):
        normlab.compute_stats(pattern.format("bad"), storage_options=s3)
    with pytest.raises(SourceError, match=r"s3://normlab-wds/nope-0\.tar: no such"):
        normlab.compute_stats("s3://normlab-wds/nope-{0..1}.tar", storage_options=s3)


def test_shards_on_the_gcs_emulator(tmp_path, gcs):
    """gs:// shards on the GCS emulator, read here and by worker processes; a missing shard is
    named by its URL."""
    from gcsfs.core import GCSFileSystem

    rng = np.random.default_rng(9)
    good = [encode(a, "png") for a in rng.integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)]
    folder, _ = write_corpus(tmp_path / "good", good, "png", 2)
    fs = GCSFileSystem(**gcs)
    fs.mkdir("normlab-wds")
    for shard in ("shard-000.tar", "shard-001.tar"):
        fs.put(str(tmp_path / "good" / shard), f"normlab-wds/good/{shard}")
    reference = normlab.compute_stats(folder, "channel")
    for engine in ({"engine": "serial"}, {"engine": "local", "workers": 2}):
        got = normlab.compute_stats(
            "gs://normlab-wds/good/shard-{000..001}.tar", "channel", storage_options=gcs, **engine
        )
        assert same(got, reference), engine
    with pytest.raises(SourceError, match=r"gs://normlab-wds/nope-0\.tar: no such"):
        normlab.compute_stats("gs://normlab-wds/nope-{0..1}.tar", storage_options=gcs)


def test_checkpoints_notice_a_changed_shard(tmp_path):
    rng = np.random.default_rng(8)
    images = [encode(a, "png") for a in rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)]
    _, pattern = write_corpus(tmp_path / "data", images, "png", 2)
    first = normlab.compute_stats(pattern, checkpoint=tmp_path / "ckpt")
    assert same(normlab.compute_stats(pattern, checkpoint=tmp_path / "ckpt"), first)
    shard = tmp_path / "data" / "shard-001.tar"
    with tarfile.open(shard, "w") as tar:  # other images under the same names
        for i, data in enumerate(images[:3]):
            info = tarfile.TarInfo(f"sample{i + 3:05d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(normlab.NormlabError, match="made for other inputs"):
        normlab.compute_stats(pattern, checkpoint=tmp_path / "ckpt")


def test_a_brace_pattern_naming_too_many_shards_is_refused_before_expanding():
    """{0..999999}{0..999999} would build 10**12 names: counted first, refused at once."""
    with pytest.raises(SourceError, match="names 1000000000000 shards"):
        expand_braces("s-{0..999999}-{0..999999}.tar")
    with pytest.raises(SourceError, match="names 100000001 shards"):
        normlab.compute_stats("s-{0..100000000}.tar")


def test_a_shard_cut_anywhere_is_truncated(tmp_path):
    """A cut between members, or inside the padding after one (not a multiple of 512 bytes,
    no end-of-archive marker), loses the members after it: reported with the byte where the
    file ends, or skipped and listed with skip_bad, never read as a shorter shard."""
    rng = np.random.default_rng(5)
    images = [encode(a, "png") for a in rng.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8)]
    write_corpus(tmp_path, images, "png", 1)
    whole = (tmp_path / "shard-000.tar").read_bytes()
    members, damaged = index_shard(str(tmp_path / "shard-000.tar"))
    assert damaged is None and len(members) == 8
    cut = tmp_path / "cut.tar"
    # inside the padding after the first image, after its label, and on a block boundary
    padding = members[0].offset + members[0].size + 10
    for length in (padding, members[1].offset + members[1].size + 64, 1600, 700, 2048):
        cut.write_bytes(whole[:length])
        with pytest.raises(SourceError, match=rf"cut\.tar: truncated.* {length}\b"):
            normlab.compute_stats(str(cut), "channel")
        stats = normlab.compute_stats(str(cut), "channel", skip_bad=True)
        assert stats.n_samples_seen < 4
        assert [s["item"] for s in stats.skipped] == [str(cut)]
        assert "truncated" in stats.skipped[0]["reason"]
    for length in (len(whole), members[-1].offset + 512 + 512):  # one zero block: tar's end
        cut.write_bytes(whole[:length])
        assert normlab.compute_stats(str(cut), "channel").n_samples_seen == 4


@pytest.mark.parametrize(
    ("compress", "name"),
    [
        ("gzip", "gzip"),
        ("bz2", "bzip2"),
        ("lzma", "xz"),
    ],
)
def test_a_compressed_shard_says_so(tmp_path, compress, name):
    """A compressed .tar is not a damaged one: "truncated tar header at byte 0" told nothing."""
    import importlib

    rng = np.random.default_rng(6)
    images = [encode(a, "png") for a in rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)]
    write_corpus(tmp_path, images, "png", 1)
    whole = (tmp_path / "shard-000.tar").read_bytes()
    packed = tmp_path / "packed.tar"
    packed.write_bytes(importlib.import_module(compress).compress(whole))
    for skip_bad in (False, True):
        with pytest.raises(SourceError, match=rf"packed\.tar: {name}-compressed.*decompress"):
            normlab.compute_stats(str(packed), "channel", skip_bad=skip_bad)
