"""Safe files: safetensors tensors + JSON metadata, atomic writes, never pickle.

Every normlab object that can be saved has ``metadata()`` / ``to_tensors()`` and a
``from_tensors(meta, tensors)`` class method, and is registered here by class name, so
:func:`load` returns whatever object a file holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import FileFormatError, NormlabError

FORMAT_NAME = "normlab"
FORMAT_VERSION = 1
_HEADER_LIMIT = 100 * 1024 * 1024  # safetensors refuses larger headers too
_REGISTRY: dict[str, Callable[[dict[str, Any], dict[str, np.ndarray]], Any]] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` loadable by :func:`load` (by its class name)."""
    _REGISTRY[cls.__name__] = cls.from_tensors
    return cls


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file beside ``path``, fsync, then rename over it.

    Readers see the old complete file or the new complete file, never a partial one; on any
    error the temporary file is removed and the destination is untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.chmod(tmp, _new_file_mode(dest))  # mkstemp makes 0600 files; keep the usual mode
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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


def read_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and validate a normlab file: ``(metadata, tensors)``; errors are FileFormatError."""
    from safetensors.numpy import load

    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise FileFormatError(f"{p}: not a normlab file (only {size} bytes)")
            header_len = int.from_bytes(head, "little")
            if header_len > min(_HEADER_LIMIT, size - 8):
                raise FileFormatError(
                    f"{p}: not a normlab file (header of {header_len} bytes in a file of {size})"
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

    for module in ("moments", "normalizers", "comoments", "whitening"):
        with contextlib.suppress(ImportError):
            importlib.import_module(f"normlab.{module}")
