"""Image folders and image file lists: JPEG, PNG, TIFF and whatever Pillow reads.

* **Files**: a folder (searched recursively; ``glob=`` picks files, default every file with an
  image suffix; a pattern without ``/`` such as ``"*.png"`` matches file names in every
  subfolder, one with ``/`` matches relative paths, ``**/`` for any depth; a wildcard never
  matches a leading dot, as in a shell; symbolic links to folders are followed, each real
  folder and file read once, loops named in a warning), a list of image
  paths (kept in the given order), or a ``.txt`` file listing one path per line (relative to
  the list's folder). A folder is sorted by relative path, and a task is a contiguous slice of
  the list, so tasks are small picklable objects for any engine.
* **Decoders**: JPEG by simplejpeg (libjpeg-turbo) when installed, else Pillow; PNG and TIFF by
  OpenCV (``IMREAD_UNCHANGED``: 16-bit files stay 16-bit — Pillow turns 16-bit colour PNGs
  into 8-bit), else Pillow; every other format by Pillow. Samples are ``(H, W, C)`` arrays, with
  ``C = 1`` for grey images, in RGB order.
* **Frames**: every page of a multi-page TIFF and every frame of an animated PNG, GIF or WebP
  is a sample (reduced-resolution TIFF pages after the first are not); a JPEG is one image.
* **Modes**: by default every file must have one mode (``L 8-bit``, ``RGB 8-bit``,
  ``L 16-bit``, ...); mixed modes are an error naming one file of each. ``mode="RGB"`` or
  ``"L"`` (any case) converts (alpha is dropped; grey from colour uses ITU-R 601-2 luma,
  Pillow's weights; colour JPEGs give their stored luma plane); ``mode="keep"`` keeps each
  file as stored, which suits ``axis="global"``. The bit depth is never changed.
* **Sizes**: per-channel and global statistics take mixed sizes; per-pixel statistics need one
  size or ``resize=(H, W)`` with ``interpolation=`` (nearest, bilinear, bicubic, lanczos).
* **Bad files** (corrupt, truncated, not an image, unreadable, not a regular file) raise a
  :class:`~normlab.errors.SourceError` naming the file; with ``skip_bad=True`` they are skipped
  and listed in the statistics (``stats.skipped``, ``stats.n_skipped``, and the saved file).
"""

from __future__ import annotations

import functools
import importlib
import io
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ..errors import (
    EmptyDataError,
    MissingExtraError,
    NormlabError,
    SourceError,
    require,
)
from ..provenance import recorder
from . import Source, register_source
from .arrays import MAX_READ_BYTES
from .fs import FolderWalk, Location, expand, is_path_like, is_url, location, walk_local

IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .jpe .png .tif .tiff .bmp .gif .webp .ppm .pgm .pbm .pnm .tga .jp2 .ico".split()
)
MODES = (None, "RGB", "L", "keep")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
FILES_PER_TASK = 256  # a task: the unit of parallel work; a few hundred files amortise it
CHUNK_BYTES = 8 * 1024 * 1024  # decoded images per batch handed to the statistics
_CHANNEL_NAMES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Refuse images that declare more pixels than this before decoding them (a few header bytes can
# claim 30000 × 30000 and make a decoder allocate gigabytes): 2**28 pixels, 3× Pillow's own
# decompression-bomb threshold.
MAX_PIXELS = 1 << 28
# Decoded bytes per byte of file a real image reaches (deflate tops out near 1032:1; JPEG
# needs bits for every 8x8 block): a header declaring more is refused before decoding.
MAX_EXPANSION = 2048
_SLACK_BYTES = 1 << 20


def check_declared(width: int, height: int, bytes_per_pixel: int, data: bytes, what: str) -> None:
    """Refuse a header whose declared size is impossible or larger than allowed, before decoding."""
    pixels = int(width) * int(height)
    if width <= 0 or height <= 0:
        raise BadImage(f"{what} header declares a size of {width} x {height}")
    if pixels > MAX_PIXELS:
        raise BadImage(
            f"{what} header declares {width} x {height} = {pixels} pixels, more than the "
            f"{MAX_PIXELS} allowed"
        )
    decoded = pixels * bytes_per_pixel
    if decoded > MAX_EXPANSION * len(data) + _SLACK_BYTES:
        raise BadImage(
            f"{what} header declares {width} x {height} pixels ({decoded} bytes decoded) in a "
            f"file of {len(data)} bytes: more than any real image compresses to; corrupt file"
        )


def check_file_size(size: int) -> None:
    """Refuse an image file (or a shard's member) larger than any image normlab decodes, before
    reading it: :data:`MAX_PIXELS` of 4 channels of 16 bits are 2 GiB decoded."""
    if size > MAX_READ_BYTES:
        raise BadImage(
            f"{size} bytes: larger than any image normlab decodes (at most {MAX_READ_BYTES} "
            "bytes are read at once)"
        )


@dataclass(frozen=True)
class ImageOptions:
    """How every file of one source is decoded (shared by its tasks; picklable)."""

    mode: str | None = None
    resize: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    skip_bad: bool = False
    chunk_size: int | None = None


class BadImage(Exception):
    """A file that could not be decoded (internal: becomes a SourceError or a skip note)."""


# ---------------------------------------------------------------------- decoders
def _optional(module: str) -> Any:
    """An optional decoder module, or None; a dict lookup once imported (this runs per file)."""
    if module in sys.modules:
        return sys.modules[module]
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


_QUIETED: list[Any] = []  # the OpenCV module whose log was silenced (once per process)


def _cv2() -> Any:
    cv2 = _optional("cv2")
    if cv2 is not None and not _QUIETED:
        # corrupt files are reported by normlab with their name; OpenCV's own log lines only
        # add noise
        logging = getattr(getattr(cv2, "utils", None), "logging", None)
        if logging is not None:
            logging.setLogLevel(logging.LOG_LEVEL_SILENT)
        _QUIETED.append(cv2)
    return cv2


class _DecoderStderr:
    """Keeps what C decoders print on the process's stderr off the user's terminal.

    libpng (inside OpenCV) prints ``libpng error: IDAT: invalid block type`` or ``libpng
    warning: ...`` on file descriptor 2 itself, beside the exception-free failure normlab
    reports with the file's name. While a decoder runs, descriptor 2 points at a private file;
    afterwards the libpng lines are dropped and anything else written meanwhile (by another
    thread) is written to the real stderr, in order. Thread-safe: the first decoder to start
    redirects, the last to finish restores. Costs four system calls per file (about 5 us).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved = -1
        self.capture = -1  # an unlinked temporary file's descriptor (nothing left on disk)
        self.pid = -1

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread may have held it at the fork), the
        real stderr back if a decoder had redirected it, and a capture file of its own."""
        self.lock = threading.Lock()
        if self.depth and self.saved >= 0:
            os.dup2(self.saved, 2)
        if self.saved >= 0:
            os.close(self.saved)
        if self.capture >= 0:
            os.close(self.capture)
        self.depth, self.saved, self.capture, self.pid = 0, -1, -1, -1

    def __enter__(self) -> None:
        with self.lock:
            if self.depth == 0:
                try:
                    if self.pid != os.getpid():  # a forked worker gets a file of its own
                        fd, name = tempfile.mkstemp(prefix="normlab-stderr-")
                        os.unlink(name)
                        self.capture, self.pid = fd, os.getpid()
                    self.saved = os.dup(2)
                    os.dup2(self.capture, 2)
                except OSError:  # no stderr to protect (closed): decode as is
                    if self.saved >= 0:
                        os.close(self.saved)
                    self.saved = -1
            self.depth += 1

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth or self.saved < 0:
                return
            os.dup2(self.saved, 2)
            os.close(self.saved)
            self.saved = -1
            fd = self.capture
            size = os.lseek(fd, 0, os.SEEK_CUR)
            if size == 0:
                return
            os.lseek(fd, 0, os.SEEK_SET)
            written = os.read(fd, size)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        kept = b"".join(
            line for line in written.splitlines(keepends=True) if not line.startswith(b"libpng ")
        )
        if kept:
            os.write(2, kept)


_C_STDERR = _DecoderStderr()
if hasattr(os, "register_at_fork"):  # POSIX (Windows has no fork)
    os.register_at_fork(after_in_child=_C_STDERR.after_fork)
_MODE_NAMES: dict[tuple[int, np.dtype], str] = {}  # (channels, dtype) -> "RGB 8-bit", ...
_DEPTHS = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit"}


def _depth(arr: np.ndarray) -> str:
    return _DEPTHS.get(arr.dtype) or str(arr.dtype)


def _as_hwc(arr: np.ndarray) -> np.ndarray:
    return arr[:, :, None] if arr.ndim == 2 else arr


def _decode_jpeg(
    data: bytes, mode: str | None, into: np.ndarray | None = None
) -> np.ndarray | None:
    """simplejpeg (libjpeg-turbo); None when it is not installed or the file is CMYK.

    ``into``: a free slot of the current batch; when the image fits it exactly, it is decoded
    there (no copy).
    """
    simplejpeg = _optional("simplejpeg")
    if simplejpeg is None:
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        check_declared(width, height, 1 if colorspace == "Gray" else 3, data, "JPEG")
        if colorspace not in ("Gray", "YCbCr", "RGB"):
            return None  # CMYK/YCCK: Pillow converts those
        gray = mode == "L" or (mode in (None, "keep") and colorspace == "Gray")
        space = "GRAY" if gray else "RGB"
        if (
            into is not None
            and into.dtype == np.uint8
            and into.shape == (height, width, 1 if gray else 3)
        ):
            simplejpeg.decode_jpeg(data, colorspace=space, buffer=into)
            return into
        return _as_hwc(simplejpeg.decode_jpeg(data, colorspace=space))
    except ValueError as exc:
        raise BadImage(f"corrupt or truncated JPEG ({exc})") from None


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header alone (PNG's IHDR; Pillow's lazy open otherwise)."""
    if data.startswith(_PNG_MAGIC) and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    Image = _optional("PIL.Image")
    if Image is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header, decodes nothing
            return int(img.size[0]), int(img.size[1])
    except Exception:  # noqa: BLE001 - an unreadable header is the decoder's error to report
        return None


def _pillow_mode(data: bytes) -> str | None:
    """The mode Pillow reads from the header (nothing decoded), or None."""
    Image = _optional("PIL.Image")
    if Image is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return str(img.mode)
    except Exception:  # noqa: BLE001 - an unreadable header is the decoder's error to report
        return None


def _decode_cv2(data: bytes, what: str) -> np.ndarray | None:
    cv2 = _cv2()
    if cv2 is None:
        return None
    size = _declared_size(data)
    if size is not None:
        check_declared(*size, 1, data, what)
    try:
        with _C_STDERR:
            arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise BadImage(f"corrupt {what} ({str(exc).strip().splitlines()[-1]})") from None
    if arr is None:
        raise BadImage(f"corrupt or truncated {what}")
    arr = _as_hwc(arr)
    if arr.shape[2] >= 3:  # OpenCV stores BGR(A)
        arr = np.ascontiguousarray(arr[:, :, [2, 1, 0, *range(3, arr.shape[2])]])
    return arr


def _decode_pillow(data: bytes, path: str) -> np.ndarray:
    Image = require("PIL.Image", "images")
    if data.startswith(_PNG_MAGIC) and len(data) > 25 and data[24] == 16 and data[25] in (2, 6):
        raise MissingExtraError(
            f"{path}: a 16-bit colour PNG; Pillow would silently reduce it to 8 bits. Install "
            "opencv-python-headless to keep 16 bits: pip install 'normlab[images]'"
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            check_declared(img.size[0], img.size[1], 1, data, img.format or "image")
            img.load()
            if img.mode == "1":
                img = img.convert("L")
            elif img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not img.mode.startswith(
                "I;16"
            ):
                has_alpha = "A" in img.mode or "transparency" in img.info
                img = img.convert("RGBA" if has_alpha else "RGB")  # palette, CMYK, YCbCr, ...
            arr = np.asarray(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if "cannot identify" in str(exc):  # Pillow's message names a memory address: leave it out
            raise BadImage("not an image (no decoder recognises it)") from None
        raise BadImage(f"corrupt or truncated image ({exc})") from None
    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)  # I;16B is big-endian
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)  # Pillow's mode "I" for 16-bit grey files
    return _as_hwc(arr)


def decode_image(
    data: bytes, path: str, mode: str | None = None, into: np.ndarray | None = None
) -> np.ndarray:
    """Decode one file's bytes to ``(H, W, C)``, choosing the decoder by the file's magic bytes."""
    arr = None
    if data[:3] == b"\xff\xd8\xff":
        arr = _decode_jpeg(data, mode, into)
    elif data.startswith(_PNG_MAGIC):
        arr = _decode_cv2(data, "PNG")
        if arr is not None and len(data) > 25 and data[25] == 4 and arr.shape[2] == 4:
            arr = np.ascontiguousarray(arr[:, :, [0, 3]])  # grey+alpha stored: OpenCV made BGRA
    elif data[:4] in (b"II*\x00", b"MM\x00*"):
        arr = _decode_cv2(data, "TIFF")
        if arr is not None and arr.shape[2] in (1, 3) and _pillow_mode(data) in ("LA", "RGBA"):
            arr = None  # OpenCV drops a TIFF's alpha channel: Pillow keeps what is stored
    if arr is None:
        arr = _decode_pillow(data, path)
    if arr.ndim != 3 or arr.shape[2] not in _CHANNEL_NAMES or arr.dtype.kind not in "uif":
        raise BadImage(f"unsupported image layout {arr.shape} of dtype {arr.dtype}")
    return arr


def convert_mode(arr: np.ndarray, mode: str | None) -> np.ndarray:
    """``RGB``: grey repeated, alpha dropped. ``L``: ITU-R 601-2 luma (Pillow's fixed-point
    weights)."""
    channels = arr.shape[2]
    if mode == "RGB":
        if channels in (1, 2):
            return np.repeat(arr[:, :, :1], 3, axis=2)
        return arr[:, :, :3] if channels == 4 else arr
    if mode == "L":
        if channels in (1, 2):
            return arr[:, :, :1]
        if arr.dtype.kind != "u":
            weights = np.array([0.299, 0.587, 0.114])
            return (arr[:, :, :3] @ weights).astype(arr.dtype)[:, :, None]
        rgb = arr[:, :, :3].astype(np.int64)
        luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
        return luma.astype(arr.dtype)[:, :, None]
    return arr


def resize_image(arr: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    """Resize to ``(H, W)``: Pillow for 8-bit images (torchvision's default path), OpenCV else."""
    height, width = size
    if arr.shape[:2] == (height, width):
        return arr
    if arr.dtype == np.uint8:
        Image = require("PIL.Image", "images")
        resample = getattr(Image.Resampling, interpolation.upper())
        img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
        return _as_hwc(np.asarray(img.resize((width, height), resample)))
    cv2 = _cv2()
    if cv2 is None:
        raise MissingExtraError(
            f"resizing {arr.dtype} images needs opencv-python-headless: pip install "
            "'normlab[images]'"
        )
    flags = {
        "nearest": cv2.INTER_NEAREST,
        "bilinear": cv2.INTER_LINEAR,
        "bicubic": cv2.INTER_CUBIC,
        "lanczos": cv2.INTER_LANCZOS4,
    }
    return _as_hwc(cv2.resize(arr, (width, height), interpolation=flags[interpolation]))


def read_bytes(path: str) -> bytes:
    """The file's bytes; never blocks on a FIFO or a device (only regular files are opened)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise BadImage("not a regular file")
            check_file_size(info.st_size)
            data = os.read(fd, info.st_size)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise BadImage("no such file") from None
    except OSError as exc:
        raise BadImage(f"cannot read ({exc.strerror or exc})") from None
    if not data:
        raise BadImage("empty file")
    return data


def load_image(
    path: str, options: ImageOptions, into: np.ndarray | None = None
) -> tuple[np.ndarray, str, bool]:
    """Decode, convert and resize one file.

    Returns ``(array (H, W, C), mode such as 'RGB 8-bit', in_place)``.

    ``into`` (optional): where to decode when the image fits it (JPEGs without resizing);
    ``in_place`` says whether the image was decoded there (the array returned is ``into``).
    """
    return decode_member(read_bytes(path), path, options, into)


def read_file(path: str, storage_options: tuple[tuple[str, Any], ...] = ()) -> bytes:
    """:func:`read_bytes` for a local path; an fsspec URL is fetched (its errors: BadImage)."""
    if not is_url(path):
        return read_bytes(path)
    try:
        data = Location(path, storage_options).read_bytes()
    except SourceError as exc:
        raise BadImage(str(exc).removeprefix(f"{path}: ")) from None
    if not data:
        raise BadImage("empty file")
    return data


def decode_member(
    data: bytes, name: str, options: ImageOptions, into: np.ndarray | None = None
) -> tuple[np.ndarray, str, bool]:
    """:func:`load_image` for bytes already read (a tar member, a dataset cell) named ``name``."""
    if options.resize is not None:
        into = None
    arr = decode_image(data, name, options.mode, into)
    arr, mode = _finish(arr, options)
    return arr, mode, arr is into


def _finish(arr: np.ndarray, options: ImageOptions) -> tuple[np.ndarray, str]:
    """A decoded image converted to ``options.mode`` and resized, with its mode's name."""
    if options.mode in ("RGB", "L"):
        arr = convert_mode(arr, options.mode)
    key = (arr.shape[2], arr.dtype)
    name = _MODE_NAMES.get(key) or _MODE_NAMES.setdefault(
        key, f"{_CHANNEL_NAMES[key[0]]} {_depth(arr)}"
    )
    if options.resize is not None:
        arr = resize_image(arr, options.resize, options.interpolation)
    return arr, name


def decode_frames(
    data: bytes, name: str, options: ImageOptions, into: np.ndarray | None = None
) -> list[tuple[np.ndarray, str, bool]]:
    """Every frame of a file as :func:`decode_member` gives one: the pages of a multi-page
    TIFF and the frames of an animated PNG, GIF or WebP are samples each (in file order);
    reduced-resolution TIFF pages (thumbnails, pyramid levels) are left out. A JPEG is one
    image (an MPO file's extra pictures, previews or a second view, are not read)."""
    if _may_have_frames(data):
        frames = _all_frames(data)
        if frames is not None:
            return [(arr, mode, False) for arr, mode in (_finish(f, options) for f in frames)]
    return [decode_member(data, name, options, into)]


def _may_have_frames(data: bytes) -> bool:
    """Whether a file may hold several frames or pages (a few bytes looked at; no decoding):
    an ``acTL`` chunk before a PNG's image data, a TIFF's second page, an animated WebP, any
    GIF."""
    if data.startswith(_PNG_MAGIC):
        first_data = data.find(b"IDAT", 8)
        return data.find(b"acTL", 8, first_data if first_data > 0 else len(data)) > 0
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_pages(data) > 1
    if data[:4] == b"II+\x00" or data[:4] == b"MM\x00+":  # BigTIFF: let Pillow count
        return True
    if data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8X" and len(data) > 20:
        return bool(data[20] & 0x02)  # the animation flag
    return data[:4] == b"GIF8"


def _tiff_pages(data: bytes) -> int:
    """The number of pages (image directories) of a classic TIFF, from the chain of directory
    links; a link beyond the end of the file (a truncated file) or back to an earlier page is
    :class:`BadImage` (a decoder would silently read the pages before it)."""
    order: Literal["little", "big"] = "little" if data[:2] == b"II" else "big"
    offset, pages, seen = int.from_bytes(data[4:8], order), 0, set()
    while offset:
        if offset in seen:
            raise BadImage(f"TIFF page {pages} links back to an earlier page (a loop)")
        seen.add(offset)
        entries = int.from_bytes(data[offset : offset + 2], order)
        end = offset + 2 + 12 * entries
        if end + 4 > len(data):
            raise BadImage(
                f"truncated TIFF: the directory of page {pages} lies beyond the end of the file"
            )
        pages += 1
        offset = int.from_bytes(data[end : end + 4], order)
    return pages


def _all_frames(data: bytes) -> list[np.ndarray] | None:
    """The frames of a file holding more than one, as ``(H, W, C)`` arrays of one mode; None
    for a single frame (decoded as usual). Sizes are checked from the headers first."""
    Image = require("PIL.Image", "images")
    try:
        with Image.open(io.BytesIO(data)) as img:
            n_frames = int(getattr(img, "n_frames", 1))
            fmt = str(img.format or "image")
            classic = data[:4] in (b"II*\x00", b"MM\x00*")
            if fmt == "TIFF" and classic and n_frames != _tiff_pages(data):
                raise BadImage(f"TIFF of {_tiff_pages(data)} pages; {n_frames} could be read")
            if n_frames <= 1:
                return None
            keep, total = [], 0
            for i in range(n_frames):
                img.seek(i)
                tags = getattr(img, "tag_v2", None)
                if i and fmt == "TIFF" and tags is not None and int(tags.get(254, 0)) & 1:
                    continue  # NewSubfileType: a reduced-resolution copy of another page
                width, height = img.size
                check_declared(width, height, 1, data, f"{fmt} frame {i}")
                total += width * height
                keep.append(i)
            check_declared(total, 1, 1, data, f"{fmt} ({len(keep)} frames)")
            alpha = img.mode in ("LA", "RGBA") if fmt == "TIFF" else False
            img.seek(0)
            first_mode = img.mode
            cv2 = _cv2()
            if fmt in ("PNG", "TIFF") and cv2 is not None and not alpha:
                frames = _frames_cv2(cv2, data, fmt, n_frames)
                if frames is not None:
                    if fmt == "PNG" and first_mode == "LA":
                        frames = [np.ascontiguousarray(f[:, :, [0, 3]]) for f in frames]
                    return [frames[i] for i in keep]
            return _frames_pillow(img, keep)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BadImage(f"corrupt or truncated image ({exc})") from None


def _frames_cv2(cv2: Any, data: bytes, fmt: str, n_frames: int) -> list[np.ndarray] | None:
    """Every page/frame by OpenCV (16-bit colour kept); None when it counts another number."""
    try:
        with _C_STDERR:
            ok, pages = cv2.imdecodemulti(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise BadImage(f"corrupt {fmt} ({str(exc).strip().splitlines()[-1]})") from None
    if not ok:
        raise BadImage(f"corrupt or truncated {fmt}")
    if len(pages) != n_frames:
        return None
    out = []
    for page in pages:
        arr = _as_hwc(page)
        if arr.shape[2] >= 3:  # OpenCV stores BGR(A)
            arr = np.ascontiguousarray(arr[:, :, [2, 1, 0, *range(3, arr.shape[2])]])
        out.append(arr)
    return out


def _frames_pillow(img: Any, keep: list[int]) -> list[np.ndarray]:
    """The chosen frames by Pillow, each in the mode the first one is read in (a GIF's later
    frames come as RGB or RGBA: converted to the first's)."""
    frames: list[np.ndarray] = []
    target = None
    for i in keep:
        img.seek(i)
        img.load()
        frame = img
        if frame.mode == "1":
            frame = frame.convert("L")
        elif frame.mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not frame.mode.startswith(
            "I;16"
        ):
            has_alpha = "A" in frame.mode or "transparency" in frame.info
            frame = frame.convert("RGBA" if has_alpha else "RGB")
        if target is None:
            target = frame.mode
        elif frame.mode != target:
            if target not in ("L", "LA", "RGB", "RGBA"):
                raise BadImage(f"frame {i} is {frame.mode}, frame {keep[0]} is {target}")
            frame = frame.convert(target)
        arr = np.asarray(frame)
        arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
        if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16)
        frames.append(_as_hwc(arr))
    return frames


# ---------------------------------------------------------------------- tasks
class ImageBatches:
    """Batches of decoded images from ``members()``: the loop every image task shares.

    A subclass says where its images' bytes come from (files, tar members, dataset cells):
    ``members()`` yields ``(name, read)`` pairs, ``read()`` returns the bytes or raises
    :class:`BadImage`; ``name`` is what errors and notes cite. ``extra`` is the optional
    extra that installs the decoders, named when one is missing (``normlab[webdataset]`` for
    shards, ``normlab[hf]`` for datasets).
    """

    options: ImageOptions
    n_items: int
    extra: ClassVar[str] = "images"

    def members(self) -> Iterator[tuple[str, Callable[[], bytes]]]:
        raise NotImplementedError

    def chunks(self) -> Iterator[Any]:
        """Batches of consecutive same-shape images (skips, modes and sizes go to the recorder)."""
        opts = self.options
        record = recorder()
        modes_seen: set[str] = set()
        sizes_seen: set[tuple[int, ...]] = set()
        batch: np.ndarray | None = None
        yielded: list[np.ndarray] = []  # the last full batches handed out, reused once released
        filled = 0
        for path, read in self.members():
            into = batch[filled] if batch is not None else None
            try:
                frames = decode_frames(read(), path, opts, into)  # one, or each page/frame
            except BadImage as exc:
                if not opts.skip_bad:
                    raise SourceError(f"{path}: {exc}") from None
                record.skipped(path, exc)
                continue
            except MissingExtraError as exc:  # the extra of this kind of source installs it
                message = str(exc).replace("normlab[images]", f"normlab[{self.extra}]")
                raise MissingExtraError(f"{path}: {message}") from None
            del into
            frames.reverse()
            while frames:
                arr, mode, in_place = frames.pop()
                if batch is not None and (arr.shape != batch.shape[1:] or arr.dtype != batch.dtype):
                    yield batch[:filled]
                    batch = None
                if mode not in modes_seen:
                    modes_seen.add(mode)
                    record.saw("mode", mode, path, strict=opts.mode is None)
                if arr.shape not in sizes_seen:
                    sizes_seen.add(arr.shape)
                    record.saw("size", "x".join(map(str, arr.shape)), path)
                if batch is None:
                    per_chunk = opts.chunk_size or max(1, CHUNK_BYTES // max(1, arr.nbytes))
                    shape = (min(per_chunk, self.n_items), *arr.shape)
                    batch = _released(yielded, shape, arr.dtype)
                    if batch is None:
                        batch = np.empty(shape, arr.dtype)
                    filled = 0
                if not in_place:
                    batch[filled] = arr
                filled += 1
                if filled == batch.shape[0]:
                    del arr  # drop this generator's views of the batch
                    yield batch
                    yielded = [*yielded[-1:], batch]
                    batch = None
        if batch is not None and filled:
            yield batch[:filled]


@dataclass
class ImageTask(ImageBatches):
    """A contiguous slice of a source's file list (picklable: paths and options only)."""

    files: list[str]
    start: int
    options: ImageOptions
    label: str
    storage_options: tuple[tuple[str, Any], ...] = ()  # of URLs: workers open them themselves

    # mypy: a read-only property overrides the base's class attribute (ignored below)
    @property
    def n_items(self) -> int:  # type: ignore[override]
        return len(self.files)

    def members(self) -> Iterator[tuple[str, Callable[[], bytes]]]:
        for path in self.files:
            yield path, functools.partial(read_file, path, self.storage_options)


def _released(
    yielded: list[np.ndarray], shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray | None:
    """A batch handed out earlier that nothing references any more (not even through a view).

    Fresh pages for every batch cost more than the statistics of its pixels, so a released
    buffer is filled again; one the consumer kept is never touched. Two are tracked because a
    ``for`` loop still holds the previous batch while it asks for the next.
    """
    for i in range(len(yielded)):
        candidate = yielded[i]
        # references: the list, the name `candidate` and getrefcount's argument
        if (
            candidate.shape == shape
            and candidate.dtype == dtype
            and sys.getrefcount(candidate) <= 3
        ):
            return yielded.pop(i)
    return None


def list_folder(root: Path, glob: str | None) -> tuple[list[str], int]:
    """Sorted image files under ``root`` (recursive) and the number of other files ignored.

    A ``glob`` with a ``/`` matches paths relative to ``root`` (``*`` within one folder, ``**``
    any depth); one without matches file names in every subfolder (as ``.gitignore`` does), so
    ``*.png`` finds ``cats/1.png``. Hidden names (a leading ``.``) are skipped, as a shell
    skips them: a wildcard never matches a leading dot, and a hidden folder is entered only
    when the pattern spells its dot (``**/.cache/*.png``).

    Symbolic links to folders are followed; each real folder is read once (a loop, or a second
    link to a folder read already, is not entered again), and so is each real file (a link to
    a file read already is counted as ignored); a warning names what was not read twice.
    """
    match = _glob_matcher(glob)
    by_path = glob is not None and "/" in glob
    enter_hidden = by_path and any(p.startswith(".") for p in (glob or "").split("/"))
    ignored = 0

    def choose(name: str, relative: str) -> bool:
        nonlocal ignored
        chosen = match(relative if by_path else name)
        ignored += not chosen
        return chosen

    walk = FolderWalk(str(root))
    files = list(walk_local(walk, lambda name: enter_hidden or not name.startswith("."), choose))
    walk.warn()
    # every path starts with the same str(root) prefix: plain string order is relative-path order
    return sorted(files), ignored + len(walk.repeated_files)


def _glob_matcher(glob: str | None) -> Callable[[str], bool]:
    """Whether a name (a pattern without ``/``) or a relative path matches ``glob``; without
    one, whether a name has an image suffix. Names with a leading dot match only a pattern
    that spells the dot."""
    if glob is None:
        return lambda name: not name.startswith(".") and _has_image_suffix(name)
    parts = []
    if glob.endswith("/**"):  # every file below the folder, at any depth
        glob += "/*"
    for part in glob.split("/"):
        if part == "**":
            parts.append(r"(?:(?!\.)[^/]*/)*")
            continue
        parts.append(("" if part.startswith(".") else r"(?!\.)") + _translate(part) + "/")
    pattern = re.compile("".join(parts).removesuffix("/") + r"\Z", re.DOTALL)
    return lambda name: pattern.match(name) is not None


def _translate(part: str) -> str:
    """One path component of a glob as a regular expression (``*``, ``?``, ``[...]``)."""
    out, i = [], 0
    while i < len(part):
        char = part[i]
        i += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            j = i + 1 if part[i : i + 1] == "!" else i
            j = j + 1 if part[j : j + 1] == "]" else j
            close = part.find("]", j)
            if close < 0:
                out.append(re.escape(char))
                continue
            body, i = part[i:close], close + 1
            negate = body.startswith("!")
            body = (body[1:] if negate else body).replace("\\", "\\\\").replace("[", "\\[")
            body = "\\" + body if body.startswith("^") else body
            out.append("[" + ("^/" if negate else "") + body + "]")
        else:
            out.append(re.escape(char))
    return "".join(out)


def _has_image_suffix(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _url_files(loc: Location, glob: str | None) -> tuple[list[str], int, str] | None:
    """``(files, ignored, what)`` for an image URL, a ``.txt`` list URL or a folder URL."""
    if loc.suffix == ".txt":
        try:
            text = loc.read_bytes().decode()
        except UnicodeDecodeError as exc:
            raise SourceError(f"{loc.path}: cannot read the file list ({exc})") from None
        base = loc.url.rpartition("/")[0]
        entries = [e.strip() for e in text.splitlines() if e.strip() and not e.startswith("#")]
        files = [e if "://" in e or e.startswith("/") else f"{base}/{e}" for e in entries]
        return files, 0, f"images listed in {loc.path}"
    if _is_image_path(loc.url):
        return [loc.url], 0, loc.path
    if not loc.is_dir():
        return None
    root = loc.url.rstrip("/") + "/"
    files, ignored = [], 0
    match = _glob_matcher(glob)
    for found in expand(loc):
        relative = found.url.partition(root)[2] or found.name
        if match(relative if glob is not None and "/" in glob else found.name):
            files.append(found.url)
        else:
            ignored += 1
    return files, ignored, f"images under {loc.path}" + (f" matching {glob!r}" if glob else "")


def _read_list_file(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read the file list ({exc})") from None
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [str(path.parent / e) if not os.path.isabs(e) else e for e in entries]


def _is_image_path(p: Any) -> bool:
    if not isinstance(p, (str, os.PathLike)):
        return False
    name = os.fspath(p)
    return (
        "." + name.rpartition(".")[2].lower() in IMAGE_SUFFIXES
        and "/" not in name.rpartition(".")[2]
    )


def _check_mode(mode: Any) -> str | None:
    """``mode`` as spelled in :data:`MODES`, whatever its case (``"rgb"`` is ``"RGB"``)."""
    by_case = {m.lower(): m for m in MODES if m is not None}
    if mode is None or (isinstance(mode, str) and mode.lower() in by_case):
        return None if mode is None else by_case[mode.lower()]
    raise NormlabError(f"mode must be 'RGB', 'L' or 'keep' (any case, or None); got {mode!r}")


def _check_options(resize: Any, interpolation: str) -> tuple[int, int] | None:
    if interpolation not in INTERPOLATIONS:
        raise NormlabError(
            f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}"
        )
    if resize is None:
        return None
    try:
        height, width = (int(v) for v in resize)
    except (TypeError, ValueError):
        raise NormlabError(f"resize must be (height, width); got {resize!r}") from None
    if height < 1 or width < 1:
        raise NormlabError(f"resize must be two positive sizes (height, width); got {resize!r}")
    if height * width > MAX_PIXELS:
        raise NormlabError(
            f"resize={resize!r} asks for {height * width} pixels per image, more than the "
            f"{MAX_PIXELS} allowed"
        )
    return height, width


def image_options(
    mode: str | None = None,
    resize: Any = None,
    interpolation: str = "bilinear",
    skip_bad: bool = False,
    chunk_size: int | None = None,
) -> ImageOptions:
    """Checked decoding options, shared by every source of images (folders, shards, datasets)."""
    size = _check_options(resize, interpolation)
    return ImageOptions(_check_mode(mode), size, interpolation, bool(skip_bad), chunk_size)


def image_source(
    source: Any,
    *,
    glob: str | None = None,
    mode: str | None = None,
    resize: tuple[int, int] | None = None,
    interpolation: str = "bilinear",
    skip_bad: bool = False,
    chunk_size: int | None = None,
    storage_options: dict[str, Any] | None = None,
    **_: Any,
) -> Source | None:
    """An image folder, a list of image paths, or a ``.txt`` list of them; None for other input.

    Each may be a local path or an fsspec URL (``s3://bucket/images/``) with
    ``storage_options``; tasks hold the URLs, and workers fetch the files themselves.
    """
    ignored = 0
    remote = location(source, storage_options) if is_path_like(source) else None
    if remote is not None and not remote.is_local:
        listed = _url_files(remote, glob)
        if listed is None:
            return None
        files, ignored, what = listed
        if not files:
            raise EmptyDataError(f"{remote.path}: no images found ({ignored} other file(s))")
    elif isinstance(source, (str, os.PathLike)):
        source = remote.path if remote is not None else source  # file:// URLs are local paths
        path = Path(source)
        if path.is_dir():
            files, ignored = list_folder(path, glob)
            what = f"images under {path}" + (f" matching {glob!r}" if glob else "")
            if not files:
                others = f"; {ignored} other file(s) ignored" if ignored else ""
                pattern = repr(glob) if glob else "files with an image suffix"
                raise EmptyDataError(
                    f"{path}: no images found (looked for {pattern}, recursively){others}"
                )
        elif path.suffix.lower() == ".txt" and path.is_file():
            files, what = _read_list_file(path), f"images listed in {path}"
            if not files:
                raise EmptyDataError(f"{path}: the file list is empty")
        elif _is_image_path(path):
            files, what = [str(path)], str(path)
        else:
            return None
    elif isinstance(source, (list, tuple)) and source and all(_is_image_path(p) for p in source):
        files, what = [str(p) for p in source], f"{len(source)} listed images"
    else:
        return None
    options = image_options(mode, resize, interpolation, skip_bad, chunk_size)
    where = location(files[0], storage_options)
    tasks = [
        ImageTask(
            files[s : s + FILES_PER_TASK],
            s,
            options,
            f"{what} [{s}:{min(s + FILES_PER_TASK, len(files))}]",
            where.options,
        )
        for s in range(0, len(files), FILES_PER_TASK)
    ]
    info = {
        "kind": "images",
        "n_files": len(files),
        "ignored_files": ignored,
    }
    return Source(tasks, f"{len(files)} {what}", info)


register_source(image_source, generic=True)  # any folder: after the stores of known formats
