"""Bad and hostile files: every truncated, bit-flipped, oversized or mistyped input ends in a
``NormlabError`` or a clean success — never another exception, a hang or unbounded memory — and
no file ever runs code or allocates what its header declares.

Each generated case runs under a 10 s alarm and an address-space limit of 2 GiB above the
process's own, so a hang or a huge allocation fails the test instead of the machine.
"""

from __future__ import annotations

import contextlib
import functools
import io as stdio
import json
import pickle
import resource
import signal
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab
from normlab import Moments, io
from normlab.errors import FileFormatError, NormlabError, NormlabWarning

CASE_SECONDS = 10
HEADROOM = 2 * 1024**3
DATA = Path(__file__).parent / "data"


# ------------------------------------------------------------------------------ guards
@contextlib.contextmanager
def bounded(seconds: int = CASE_SECONDS, headroom: int = HEADROOM):
    """Fail on a hang (alarm) or an allocation beyond ``headroom`` bytes (RLIMIT_AS)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"a loader ran longer than {seconds} s")

    with open("/proc/self/statm") as handle:
        virtual = int(handle.read().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = virtual + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def outcome(call) -> str:
    """Run ``call`` under the guards: 'ok' or the NormlabError subclass; anything else fails."""
    with bounded(), warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            call()
        except NormlabError as exc:
            return type(exc).__name__
    return "ok"


# ------------------------------------------------------------------------ seed files
def _seed_objects() -> dict[str, object]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    floats = rng.standard_normal((30, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NormlabWarning)
        return {
            "moments-uint8-feature": Moments.from_array(images),
            "moments-float-global": Moments.from_array(floats, "global"),
            "moments-int16-channel": Moments.from_array(images.astype(np.int16) - 100, "channel"),
            "zscore-channel": normlab.ZScore(axis="channel").fit(images),
            "minmax": normlab.MinMax().fit(floats),
            "maxabs": normlab.MaxAbs().fit(floats),
            "comoments-uint8": normlab.CoMoments().update(images.reshape(20, -1)[:, :6]),
            "whiten-zca": normlab.Whiten(method="zca").fit(floats),
            "imagestats-histogram": normlab.ImageStats(
                "channel", histogram=True, per_image_std_average=True
            ).update(images),
        }


SEEDS = _seed_objects()


@functools.cache
def seed_bytes() -> dict[str, bytes]:
    """Each seed object's saved file, as bytes."""
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, obj in SEEDS.items():
            path = Path(folder) / f"{name}.safetensors"
            obj.save(str(path))
            out[name] = path.read_bytes()
    return out


def exercise(obj) -> None:
    """Use what was loaded, as a caller would: a corrupt file must not fail later either."""
    if isinstance(obj, Moments):
        if obj.n_samples_seen and obj.sums is not None:
            obj.summary()
            obj.var(ddof=1)
            obj + obj
            if obj.axis == "feature":
                obj.reduce("global")
    elif hasattr(obj, "stats_"):  # a fitted normalizer: its statistics
        exercise(obj.stats_)
    elif hasattr(obj, "cov") and getattr(obj, "n_samples_seen", 0):
        obj.cov()
        obj + obj


def load_and_use(path: Path) -> None:
    exercise(normlab.load(str(path)))


# ------------------------------------------------------------------------- mutations
def split_header(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join_header(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def mutated(draw) -> bytes:
    data = seed_bytes()[draw(st.sampled_from(sorted(SEEDS)))]
    kind = draw(
        st.sampled_from(
            ["truncate", "flip", "header-length", "metadata", "tensor-entry", "garbage"]
        )
    )
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            pos = draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(buf)
    if kind == "header-length":
        return struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) + data[8:]
    if kind == "garbage":
        return draw(st.binary(max_size=64)) + data[draw(st.integers(0, len(data))) :]
    header, body = split_header(data)
    if kind == "metadata":
        meta = json.loads(header["__metadata__"]["normlab"])
        target = meta
        path = draw(st.sampled_from(sorted(meta)))
        if isinstance(meta[path], dict) and meta[path] and draw(st.booleans()):
            target, path = meta[path], draw(st.sampled_from(sorted(meta[path])))
        target[path] = draw(json_values)
        header["__metadata__"]["normlab"] = json.dumps(meta)
        return join_header(header, body)
    name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    entry = header[name]
    change = draw(st.sampled_from(["dtype", "shape", "offsets"]))
    if change == "dtype":
        entry["dtype"] = draw(
            st.sampled_from(
                ["F16", "BF16", "F32", "F64", "I8", "U8", "I16", "I32", "I64", "U64", "BOOL"]
            )
        )
    elif change == "shape":
        entry["shape"] = draw(st.lists(st.integers(0, 2**40), max_size=4))
    else:
        entry["data_offsets"] = sorted(
            draw(st.lists(st.integers(0, 2**50), min_size=2, max_size=2))
        )
    return join_header(header, body)


@settings(max_examples=300, deadline=None)
@given(blob=mutated())
def test_fuzzed_stats_and_normalizer_files(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "stats.safetensors"
    path.write_bytes(blob)
    outcome(lambda: load_and_use(path))


def test_every_seed_loads_unchanged(tmp_path):
    for name, blob in seed_bytes().items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(blob)
        assert normlab.load(str(path)) == SEEDS[name]


# ------------------------------------------------------------------------ npy and npz
def npy_bytes(x: np.ndarray) -> bytes:
    buf = stdio.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


NPY_SEEDS = [
    npy_bytes(np.arange(60, dtype=np.uint8).reshape(10, 6)),
    npy_bytes(np.linspace(-1, 1, 24).reshape(4, 2, 3)),
    npy_bytes(np.arange(12, dtype=">i2").reshape(6, 2)),
]


def header_dict_variants() -> st.SearchStrategy[str]:
    descr = st.sampled_from(
        [
            "'|u1'",
            "'<f8'",
            "'|O'",
            "'<U3'",
            "'<c16'",
            "'|V4'",
            "[('a', '<i4')]",
            "'<M8[s]'",
            "'xx'",
            "1",
        ]
    )
    shape = st.lists(st.integers(-3, 2**62), max_size=4).map(
        lambda s: repr(tuple(s))
    ) | st.sampled_from(["'abc'", "None", "(1.5, 2)"])
    order = st.sampled_from(["False", "True", "'x'"])
    return st.builds(
        lambda d, o, s: f"{{'descr': {d}, 'fortran_order': {o}, 'shape': {s}, }}",
        descr,
        order,
        shape,
    )


@st.composite
def mutated_npy(draw) -> bytes:
    data = draw(st.sampled_from(NPY_SEEDS))
    kind = draw(st.sampled_from(["truncate", "flip", "header", "header-length"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 6))):
            buf[draw(st.integers(0, len(buf) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(buf)
    if kind == "header-length":
        return data[:8] + struct.pack("<H", draw(st.integers(0, 2**16 - 1))) + data[10:]
    text = draw(header_dict_variants())
    header = text.encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    body = data[10 + struct.unpack("<H", data[8:10])[0] :]
    return (
        b"\x93NUMPY\x01\x00"
        + struct.pack("<H", len(header))
        + header
        + body[: draw(st.integers(0, len(body)))]
    )


@settings(max_examples=300, deadline=None)
@given(blob=mutated_npy(), as_npz=st.booleans())
def test_fuzzed_npy_and_npz(tmp_path_factory, blob, as_npz):
    folder = tmp_path_factory.mktemp("npy")
    if as_npz:
        path = folder / "data.npz"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("x.npy", blob)
    else:
        path = folder / "data.npy"
        path.write_bytes(blob)
    outcome(lambda: normlab.compute_stats(str(path)))


@settings(max_examples=100, deadline=None)
@given(
    seed=st.sampled_from(NPY_SEEDS),
    cut=st.integers(0, 400),
    flips=st.lists(st.integers(0, 10**6), max_size=6),
)
def test_fuzzed_npz_container(tmp_path_factory, seed, cut, flips):
    """The zip container itself truncated or bit-flipped."""
    buf = stdio.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.npy", seed)
    raw = bytearray(buf.getvalue())
    for f in flips:
        raw[f % len(raw)] ^= 1 << (f % 8)
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    path.write_bytes(bytes(raw[: max(1, len(raw) - cut)]))
    outcome(lambda: normlab.compute_stats(str(path)))


# ----------------------------------------------------------------------------- images
def image_bytes(fmt: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    buf = stdio.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "bmp": "BMP", "gif": "GIF"}


@settings(max_examples=200, deadline=None)
@given(
    suffix=st.sampled_from(sorted(IMAGE_FORMATS)),
    kind=st.sampled_from(["truncate", "flip", "dimensions"]),
    data=st.data(),
)
def test_fuzzed_images(tmp_path_factory, suffix, kind, data):
    pytest.importorskip("PIL")
    blob = bytearray(image_bytes(IMAGE_FORMATS[suffix]))
    if kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    else:  # bytes where the formats keep width and height, overwritten with large values
        pos = data.draw(st.integers(0, min(40, len(blob) - 4)))
        blob[pos : pos + 4] = struct.pack(">I", data.draw(st.integers(0, 2**32 - 1)))
    path = tmp_path_factory.mktemp("img") / f"image.{suffix}"
    path.write_bytes(bytes(blob))
    outcome(lambda: normlab.compute_stats(str(path), axis="channel"))


@pytest.mark.parametrize("side", [30000, 60000])
def test_png_declaring_a_huge_image_is_refused_without_allocating(tmp_path, side):
    """A side × side RGB PNG header (2.7 GB or 10.8 GB decoded) on a few bytes of data."""
    import zlib

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + tag
            + payload
            + struct.pack(">I", zlib.crc32(tag + payload))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    assert outcome(lambda: normlab.compute_stats(str(path), axis="channel")) == "SourceError"


# ------------------------------------------------------------------------ hostile files
class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_payloads_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(str(marker)))
    assert not marker.exists()
    objects = np.empty((3, 1), dtype=object)
    objects[:] = _Payload(str(marker))
    attempts = {
        "stats.safetensors": payload,  # a pickle where a stats file should be
        "evil.npy": None,
        "evil.npz": None,
    }
    np.save(tmp_path / "evil.npy", objects, allow_pickle=True)
    np.savez(tmp_path / "evil.npz", x=objects)
    (tmp_path / "stats.safetensors").write_bytes(attempts["stats.safetensors"])
    assert outcome(lambda: normlab.load(str(tmp_path / "stats.safetensors"))) == "FileFormatError"
    assert outcome(lambda: normlab.compute_stats(str(tmp_path / "evil.npy"))) == "SourceError"
    assert outcome(lambda: normlab.compute_stats(str(tmp_path / "evil.npz"))) == "SourceError"
    # a pickle hidden in the metadata of a valid file is only ever read as JSON text
    meta_holder = tmp_path / "meta.safetensors"
    Moments.from_array(np.ones((2, 2), np.uint8)).save(str(meta_holder))
    header, body = split_header(meta_holder.read_bytes())
    header["__metadata__"]["pickle"] = payload.decode("latin1")
    meta_holder.write_bytes(join_header(header, body))
    assert outcome(lambda: normlab.load(str(meta_holder))) == "ok"
    torch = pytest.importorskip("torch")
    torch.save({"x": _Payload(str(marker))}, tmp_path / "model.pt")
    (tmp_path / "model.safetensors").write_bytes((tmp_path / "model.pt").read_bytes())
    assert outcome(lambda: normlab.load(str(tmp_path / "model.safetensors"))) == "FileFormatError"
    assert not marker.exists()


def test_header_declaring_a_huge_tensor_is_refused_without_allocating(tmp_path):
    """1e12 float32 elements (4 TB) declared in a 1 kB file; also shape/offset mismatches."""
    path = tmp_path / "huge.safetensors"
    Moments.from_array(np.ones((2, 3), np.float64)).save(str(path))
    header, body = split_header(path.read_bytes())
    for offsets in ([0, 4 * 10**12], [0, header["count"]["data_offsets"][1]]):
        header["count"] = {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": offsets}
        path.write_bytes(join_header(header, body))
        # 2 GiB of headroom: allocating the declared 4 TB would raise MemoryError, not pass
        assert outcome(lambda: normlab.load(str(path))) == "FileFormatError"


def test_npy_header_declaring_a_huge_array_is_refused_without_allocating(tmp_path):
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 1000), }"
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    path = tmp_path / "huge.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 4096)
    assert outcome(lambda: normlab.compute_stats(str(path))) == "SourceError"


# ------------------------------------------------------------------------ format versions
def test_newer_format_version_is_refused_naming_both_versions(tmp_path):
    path = tmp_path / "future.safetensors"
    Moments.from_array(np.ones((2, 2), np.uint8)).save(str(path))
    header, body = split_header(path.read_bytes())
    meta = json.loads(header["__metadata__"]["normlab"])
    meta["format_version"] = io.FORMAT_VERSION + 1
    header["__metadata__"]["normlab"] = json.dumps(meta)
    path.write_bytes(join_header(header, body))
    with pytest.raises(FileFormatError) as info:
        normlab.load(str(path))
    message = str(info.value)
    assert f"version {io.FORMAT_VERSION + 1}" in message and f"up to {io.FORMAT_VERSION}" in message


@pytest.mark.parametrize(
    "name",
    ["moments_v1_uint8.safetensors", "moments_v1_float.safetensors", "zscore_v1.safetensors"],
)
def test_committed_fixtures_of_format_v1_still_load(name):
    """Files written by format version 1 (tests/data, made by tests/data/make_fixtures.py)."""
    obj = normlab.load(str(DATA / name))
    expected = json.loads((DATA / "expected_v1.json").read_text())[name]
    stats = obj if isinstance(obj, Moments) else obj.stats_
    assert stats.mean.tolist() == expected["mean"]
    assert stats.var().tolist() == expected["var"]
    assert stats.n_samples_seen == expected["n_samples_seen"]
    if not isinstance(obj, Moments):
        x = np.array(expected["probe"], np.float64)
        assert obj.transform(x).tolist() == expected["transformed"]
