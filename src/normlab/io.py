"""Safe files: safetensors tensors + JSON metadata, atomic writes, never pickle.

Every normlab object that can be saved has ``metadata()`` / ``to_tensors()`` and a
``from_tensors(meta, tensors)`` class method, and is registered here by class name, so
:func:`load` returns whatever object a file holds.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import math
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

import numpy as np

from .errors import FileFormatError, NormlabError, SourceError

FORMAT_NAME = "normlab"
FORMAT_VERSION = 1
_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors refuses larger headers too
_REGISTRY: dict[str, Callable[[dict[str, Any], dict[str, np.ndarray]], Any]] = {}


class _Loadable(Protocol):
    """What :func:`register` needs of a class: a constructor from the saved form."""

    @classmethod
    def from_tensors(cls, meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> Any: ...


_L = TypeVar("_L", bound=_Loadable)


def json_finite(obj: Any, digits: int | None = None) -> Any:
    """``obj`` with every NaN/±inf float (Python or numpy) as ``None``, numpy values as Python.

    JSON has no NaN: ``json.dumps`` writes a bare ``NaN`` that strict parsers (JavaScript's,
    ``jq``) reject. A statistic without values (an all-NaN feature under ``omit``) is ``null``.
    ``digits``: round every float to that many significant digits (stable, small files).
    """
    if isinstance(obj, dict):
        return {key: json_finite(value, digits) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_finite(value, digits) for value in obj]
    if isinstance(obj, np.ndarray):
        return json_finite(obj.tolist(), digits)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        if digits is not None:
            return float(f"{obj:.{digits}g}")
    return obj


def json_text(obj: Any, **options: Any) -> str:
    """Strict JSON text of ``obj`` (:func:`json_finite` first; never a bare NaN)."""
    return json.dumps(json_finite(obj), allow_nan=False, **options)


def register(cls: type[_L]) -> type[_L]:
    """Class decorator: make ``cls`` loadable by :func:`load` (by its class name)."""
    _REGISTRY[cls.__name__] = cls.from_tensors
    return cls


def unregister(cls: type) -> None:
    """Undo :func:`register` (a plug-in's or a test's own class); unknown classes are ignored."""
    _REGISTRY.pop(cls.__name__, None)


def is_registered(class_name: str) -> bool:
    """Whether files whose metadata names ``class_name`` can be loaded."""
    return class_name in _REGISTRY


# (st_dev, st_ino, path) of the files the running command reads: atomic_write refuses them.
_INPUTS: contextvars.ContextVar[tuple[tuple[int, int, str], ...]] = contextvars.ContextVar(
    "normlab_inputs", default=()
)
_TMP_SUFFIX = ".tmp"
STALE_TMP_SECONDS = 0.0  # a temporary file nobody holds a lock on is stale at once


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def check_regular(
    path: str | os.PathLike[str],
    *,
    folder_ok: bool = False,
    error: type[NormlabError] = SourceError,
) -> None:
    """Refuse a path that exists but is not a regular file (a FIFO, a device, a socket).

    Opening a FIFO blocks until a writer appears and a device may never end, so every path
    normlab reads is checked first. A missing path is left to the caller's own message.
    """
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return
    if stat.S_ISREG(info.st_mode) or (folder_ok and stat.S_ISDIR(info.st_mode)):
        return
    what = "a regular file or a folder" if folder_ok else "a regular file"
    raise error(f"{os.fspath(path)}: is {_kind(info.st_mode)}; normlab reads only {what}")


def _identity(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        info = os.stat(path)  # follows symlinks: a link to an input is that input
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def refuse_overwrite(
    outputs: Iterable[str | os.PathLike[str] | None],
    inputs: Iterable[str | os.PathLike[str] | None],
) -> None:
    """Raise :class:`NormlabError` when an output is one of the inputs.

    The same path, a symbolic link to it or a hard link of it (compared by device and inode),
    checked before anything is read. An input folder also counts through its files: an output
    inside an input folder that the folder's reader would read is refused as well.
    """
    ins = [(os.fspath(p), _identity(p)) for p in inputs if p is not None]
    for out in outputs:
        if out is None:
            continue
        ident = _identity(out)
        for name, in_ident in ins:
            if in_ident is None:
                continue
            if ident is not None and ident == in_ident:
                same = os.path.abspath(out) == os.path.abspath(name)
                how = "" if same else " (through a link: the same file)"
                raise NormlabError(
                    f"{os.fspath(out)}: the output is the input {name}{how}; writing it would "
                    "destroy the input. Choose another output path"
                )
            if os.path.isdir(name) and _inside(out, name):  # new files too: read next time
                from .sources.images import IMAGE_SUFFIXES
                from .sources.tables import PARQUET_SUFFIXES

                read = IMAGE_SUFFIXES | {".npy", ".npz", *PARQUET_SUFFIXES}  # folder readers'
                if Path(out).suffix.lower() in read:
                    raise NormlabError(
                        f"{os.fspath(out)}: the output is (or would become) one of the files "
                        f"read from the input folder {name}; choose an output path outside it"
                    )


def _inside(path: str | os.PathLike[str], folder: str) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real.startswith(root.rstrip(os.sep) + os.sep)


@contextlib.contextmanager
def reading(*paths: str | os.PathLike[str] | None) -> Iterator[None]:
    """Within this block, :func:`atomic_write` refuses to replace any of ``paths``."""
    found = []
    for p in paths:
        if p is None:
            continue
        ident = _identity(p)
        if ident is not None:
            found.append((*ident, os.fspath(p)))
    token = _INPUTS.set(_INPUTS.get() + tuple(found))
    try:
        yield
    finally:
        _INPUTS.reset(token)


def _remove_stale_temporaries(dest: Path) -> None:
    """Remove temporary files of ``dest`` left by killed writes.

    A live writer holds an exclusive ``flock`` on its temporary file, released by the kernel
    when the writer dies; a temporary file whose lock can be taken is a leftover.
    """
    prefix = f".{dest.name}."
    try:
        names = [
            n for n in os.listdir(dest.parent) if n.startswith(prefix) and n.endswith(_TMP_SUFFIX)
        ]
    except OSError:
        return
    now = time.time()
    for name in names:
        path = dest.parent / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < STALE_TMP_SECONDS:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            with contextlib.suppress(OSError):
                os.unlink(path)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path``, fsync, then rename over it.

    Readers see the old complete file or the new complete file, never a partial one; on any
    error the temporary file is removed and the destination is untouched. Temporary files of
    the same destination left by a killed write are removed first. Inside :func:`reading`,
    a destination that is one of the inputs is refused.
    """
    dest = Path(path)
    check_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=_TMP_SUFFIX, dir=dest.parent)
    pending = _PENDING.get()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # marks it live; the kernel drops it if we die
        os.chmod(tmp, _new_file_mode(dest))  # mkstemp makes 0600 files; keep the usual mode
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
            if pending is None:
                os.replace(tmp, dest)  # still locked: a concurrent cleaner never takes it
            else:  # renamed at the end of `written_together`; the lock lives on in the copy
                pending.append((tmp, dest, os.dup(handle.fileno())))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_destination(path: str | os.PathLike[str]) -> None:
    """Refuse a destination that cannot take a new file: one of the running command's inputs
    (inside :func:`reading`), a folder, a special file, or a path below a file."""
    dest = Path(path)
    ident = _identity(dest)
    if ident is not None:
        for dev, ino, name in _INPUTS.get():
            if (dev, ino) == ident:
                raise NormlabError(
                    f"{dest}: the output is the input {name}; writing it would destroy the "
                    "input. Choose another output path"
                )
        if os.path.isdir(dest):
            raise NormlabError(f"{dest}: is a folder; give a file path to write")
        if not stat.S_ISREG(os.stat(dest).st_mode):
            raise NormlabError(f"{dest}: is {_kind(os.stat(dest).st_mode)}; cannot replace it")
    for parent in dest.absolute().parents:  # the nearest existing folder above must be one
        if os.path.lexists(parent):
            if not os.path.isdir(parent):
                raise NormlabError(f"{dest}: {parent} is a file, not a folder")
            break


# (temporary file, destination, lock) of the writes waiting for `written_together` to end
_PENDING: contextvars.ContextVar[list[tuple[str, Path, int]] | None] = contextvars.ContextVar(
    "normlab_pending_writes", default=None
)


@contextlib.contextmanager
def written_together() -> Iterator[None]:
    """Every :func:`atomic_write` inside this block puts its file in place only when the block
    ends without an error: a command that writes several files writes all or none of them.

    Each file is complete (fsynced) in its temporary file before the first rename; on an
    error every temporary file is removed and no destination is touched.
    """
    pending: list[tuple[str, Path, int]] = []
    token = _PENDING.set(pending)
    try:
        try:
            yield
        finally:
            _PENDING.reset(token)
        while pending:
            tmp, dest, lock = pending[0]
            os.replace(tmp, dest)
            pending.pop(0)
            os.close(lock)
    finally:
        for tmp, _, lock in pending:  # an error: nothing of the block reaches its destination
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.close(lock)


def _new_file_mode(dest: Path) -> int:
    """The mode an ordinary write would give: the old file's, else 0666 less the umask."""
    try:
        return dest.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save_object(obj: Any, path: str | os.PathLike) -> None:
    """Save a registered normlab object atomically."""
    from safetensors.numpy import save

    meta = dict(obj.metadata())
    meta["format"] = FORMAT_NAME
    meta["format_version"] = FORMAT_VERSION
    from . import __version__

    meta["normlab_version"] = __version__
    tensors = {k: np.array(v, order="C") for k, v in obj.to_tensors().items()}  # 0-d stays 0-d
    payload = save(tensors, metadata={FORMAT_NAME: json.dumps(meta)})
    with atomic_write(path) as handle:
        handle.write(payload)


# What a file that is not a normlab file often is (its first bytes), for messages
_DATA_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PAR1", "a Parquet file"),
    (b"\x93NUMPY", "a .npy array"),
    (b"PK\x03\x04", "a zip file (.npz?)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89HDF", "an HDF5 file"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"BM", "a BMP image"),
)


def looks_saved(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a normlab (safetensors) file: data files never do."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return False
    if len(head) < 9:
        return False
    return int.from_bytes(head[:8], "little") <= size - 8 and head[8:9] == b"{"


def _what_it_is(head: bytes) -> str:
    """``; it is a Parquet file: data, ...`` for data files, else empty."""
    for magic, what in _DATA_MAGIC:
        if head.startswith(magic):
            return (
                f"; it is {what}: data, not saved statistics or a normalizer (compute them "
                "with `normlab stats` or normlab.compute_stats)"
            )
    return ""


def read_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and validate a normlab file: ``(metadata, tensors)``; errors are FileFormatError."""
    from safetensors.numpy import load

    p = Path(path)
    check_regular(p, error=FileFormatError)
    try:
        size = p.stat().st_size
        with open(p, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise FileFormatError(f"{p}: not a normlab file (only {size} bytes)")
            header_len = int.from_bytes(head, "little")
            if header_len > min(_HEADER_LIMIT, size - 8):
                raise FileFormatError(
                    f"{p}: not a normlab file (header of {header_len} bytes in a file of "
                    f"{size}){_what_it_is(head)}"
                )
            data = head + handle.read()
    except FileNotFoundError:
        raise FileFormatError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise FileFormatError(f"{p}: is a directory, not a normlab file") from None
    except PermissionError:
        raise FileFormatError(f"{p}: permission denied") from None
    try:
        header = json.loads(data[8 : 8 + header_len])
        raw_meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
        meta = json.loads(raw_meta.get(FORMAT_NAME, "null"))
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise FileFormatError(f"{p}: not a normlab file (unreadable header)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise FileFormatError(f"{p}: not a normlab file (no normlab metadata)")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise FileFormatError(f"{p}: normlab file without a format version")
    if version > FORMAT_VERSION:
        raise FileFormatError(
            f"{p}: written with file format version {version} (normlab "
            f"{meta.get('normlab_version', '?')}); this normlab reads versions up to "
            f"{FORMAT_VERSION}: upgrade normlab"
        )
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise FileFormatError(f"{p}: corrupt or truncated normlab file ({exc})") from None
    return meta, tensors


def load(path: str | os.PathLike) -> Any:
    """Load any normlab file: statistics, co-moments or a fitted normalizer.

    >>> import numpy as np, normlab, tempfile, os
    >>> m = normlab.Moments.from_array(np.arange(6, dtype=np.uint8).reshape(3, 2))
    >>> path = os.path.join(tempfile.mkdtemp(), "stats.safetensors")
    >>> m.save(path)
    >>> normlab.load(path) == m
    True
    """
    from .validate import path_like

    path_like("path", path)
    _import_savable_classes()
    meta, tensors = read_file(path)
    cls_name = meta.get("class")
    if not isinstance(cls_name, str) or cls_name not in _REGISTRY:
        raise FileFormatError(
            f"{path}: holds an object of class {cls_name!r}, which this normlab does not know"
        )
    try:
        return _REGISTRY[cls_name](meta, tensors)
    except NormlabError as exc:
        raise FileFormatError(f"{path}: corrupt {cls_name} file ({exc})") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
        raise FileFormatError(
            f"{path}: corrupt {cls_name} file ({type(exc).__name__}: {exc})"
        ) from None


def from_parts(meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> Any:
    """The registered object that ``metadata()`` and ``to_tensors()`` describe."""
    _import_savable_classes()
    cls_name = meta.get("class")
    if not isinstance(cls_name, str) or cls_name not in _REGISTRY:
        raise FileFormatError(f"an object of class {cls_name!r}, which this normlab does not know")
    return _REGISTRY[cls_name](meta, tensors)


def to_plain(obj: Any) -> dict[str, Any]:
    """A savable normlab object as JSON-ready data: its metadata, and each tensor's dtype,
    shape and values (exact: integers stay integers, floats round-trip through ``repr``)."""
    return {
        "meta": obj.metadata(),
        "tensors": {
            name: {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": arr.ravel().tolist()}
            for name, arr in ((k, np.asarray(v)) for k, v in obj.to_tensors().items())
        },
    }


def from_plain(data: dict[str, Any]) -> Any:
    """Rebuild what :func:`to_plain` wrote; malformed data is a :class:`FileFormatError`."""
    try:
        tensors = {
            name: np.asarray(t["data"], dtype=np.dtype(t["dtype"])).reshape(t["shape"])
            for name, t in data["tensors"].items()
        }
        return from_parts(data["meta"], tensors)
    except NormlabError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise FileFormatError(
            f"corrupt normlab object data ({type(exc).__name__}: {exc})"
        ) from None


def load_as(path: str | os.PathLike, cls: type, hint: Callable[[Any], str] | None = None) -> Any:
    """:func:`load`, refusing a file that holds something else than a ``cls``.

    ``hint(obj)`` may add a sentence on how to make the right kind of file.
    """
    obj = load(path)
    if not isinstance(obj, cls):
        extra = hint(obj) if hint is not None else ""
        raise NormlabError(f"{path}: holds a {type(obj).__name__}, not a {cls.__name__}{extra}")
    return obj


def field(
    tensors: dict[str, np.ndarray],
    name: str,
    dtype: Any,
    shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """A named tensor of a loaded file, checked for dtype and shape."""
    if name not in tensors:
        raise FileFormatError(f"missing tensor {name!r} in the file")
    arr = tensors[name]
    if arr.dtype != np.dtype(dtype) or (shape is not None and arr.shape != tuple(shape)):
        raise FileFormatError(
            f"tensor {name!r} has dtype {arr.dtype} and shape {arr.shape}; expected "
            f"{np.dtype(dtype)} and {shape}"
        )
    return arr.copy()


def _import_savable_classes() -> None:
    """Import the modules whose classes register themselves, so load() knows them all."""
    import importlib

    from .errors import optional_import_failed

    for module in ("moments", "imagestats", "normalizers", "comoments", "whitening"):
        try:
            importlib.import_module(f"normlab.{module}")
        except ImportError as exc:
            if not optional_import_failed(exc):
                raise  # a real error inside normlab: never hide it
