"""Local paths and fsspec URLs: the one place where sources open, list and stat files.

Every path-taking source accepts a local path or an fsspec URL (``s3://``, ``gs://``,
``memory://``, ``file://``, ``https://`` for single files) plus ``storage_options`` (the
filesystem's keyword arguments: credentials, ``endpoint_url``, ...). A :class:`Location` is a
small picklable value (the URL and its options): a task holds Locations, never an open
filesystem, so a Dask worker opens the data itself and no data passes through the client.

Local paths and ``file://`` URLs take the plain ``open`` path (no fsspec needed); other
protocols need fsspec and the protocol's package: ``s3fs`` and ``aiohttp`` from the ``cloud``
extra, ``gcsfs`` from the ``gcs`` extra (it pulls in gRPC). Every failure becomes a
:class:`~normlab.errors.SourceError` naming the URL.

``gs://`` with a plain ``http://`` endpoint (an emulator, through ``endpoint_url`` or
``STORAGE_EMULATOR_HOST``) opens gcsfs's JSON-API filesystem, not the default one that first
asks the gRPC storage-control service for the bucket's layout: gcsfs's gRPC clients always speak
TLS, so against a plain-HTTP endpoint that call can only fail, after a minute of retries, on every
operation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import MissingExtraError, NormlabError, SourceError, require, warn

LOCAL_PROTOCOLS = ("file", "local")
# the package each protocol needs (fsspec's own message names it too, but not the extra)
_PROTOCOL_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "http": "aiohttp",
    "https": "aiohttp",
}
# the extra that installs each package (gcsfs has its own: it pulls in gRPC)
_EXTRA_OF_PACKAGE = {"s3fs": "cloud", "aiohttp": "cloud", "gcsfs": "gcs"}
GCS_PROTOCOLS = ("gs", "gcs")


def protocol_of(source: str | os.PathLike[str]) -> str:
    """``"s3"`` for ``s3://bucket/key``, ``"file"`` for a local path or ``file://`` URL."""
    text = os.fspath(source)
    scheme, sep, _ = text.partition("://")
    if not sep or not scheme.replace("+", "").replace("-", "").isalnum() or len(scheme) < 2:
        return "file"  # a plain path (one-letter "schemes" are Windows drive letters)
    scheme = scheme.lower()
    return "file" if scheme in LOCAL_PROTOCOLS else scheme


def is_url(source: Any) -> bool:
    """Whether ``source`` is a string naming a remote (non-local) fsspec URL."""
    return isinstance(source, (str, os.PathLike)) and protocol_of(source) != "file"


def is_path_like(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike))


def _local_path(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    return rest if sep and scheme.lower() in LOCAL_PROTOCOLS else text


@dataclass(frozen=True)
class Location:
    """A local path or an fsspec URL with its ``storage_options`` (picklable, hashable)."""

    url: str
    options: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def protocol(self) -> str:
        return protocol_of(self.url)

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def path(self) -> str:
        """The local file name (for local Locations) or the URL (for remote ones)."""
        return _local_path(self.url) if self.is_local else self.url

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rpartition("/")[2]

    @property
    def suffix(self) -> str:
        """The lower-case file suffix, ``".npy"``; ``""`` when there is none."""
        name = self.name.partition("?")[0]
        stem, dot, ext = name.rpartition(".")
        return f".{ext.lower()}" if dot and stem else ""

    @property
    def storage_options(self) -> dict[str, Any]:
        return dict(self.options)

    def __str__(self) -> str:
        return self.path

    def local_state(self) -> str:
        """``"size mtime_ns"`` of a local file that exists, else ``""``: what a fingerprint
        records so that a rewritten file is not taken for the one it replaced."""
        if not (self.is_local and os.path.exists(self.path)):
            return ""
        info = os.stat(self.path)
        return f"{info.st_size} {info.st_mtime_ns}"

    def child(self, url: str) -> Location:
        """Another file of the same filesystem (same options)."""
        return Location(url, self.options)

    def filesystem(self) -> tuple[Any, str]:
        """``(fsspec filesystem, path inside it)``; fsspec caches filesystem instances."""
        fsspec = require("fsspec", "cloud")
        options = self.storage_options
        with errors_named(self):
            if self.protocol in GCS_PROTOCOLS and gcs_endpoint_is_plain_http(options):
                from gcsfs.core import GCSFileSystem  # the JSON API only (see the module's doc)

                fs = GCSFileSystem(**options)
                return fs, fs._strip_protocol(self.url)
            fs, path = fsspec.core.url_to_fs(self.url, **options)
        return fs, path

    def open(self, **remote: Any) -> IO[bytes]:
        """The file opened for binary reading (seekable; remote files read in blocks).

        ``remote``: options of fsspec's ``open`` for remote files (``block_size``,
        ``cache_type``), ignored for local ones.

        Only opening is translated to SourceError here: what goes wrong while reading is the
        reader's to name (a corrupt archive is not an unreachable bucket).
        """
        if self.is_local:
            from ..io import check_regular

            check_regular(self.path)  # a FIFO would block the open forever
            with errors_named(self):
                return open(self.path, "rb")
        fs, path = self.filesystem()
        with errors_named(self):
            handle: IO[bytes] = fs.open(path, "rb", **remote)
        return handle

    def read_bytes(self) -> bytes:
        if self.is_local:
            with self.open() as handle:
                return handle.read()
        fs, path = self.filesystem()
        with errors_named(self):
            data: bytes = fs.cat_file(path)
        return data

    def size(self) -> int:
        if self.is_local:
            with errors_named(self):
                return os.path.getsize(self.path)
        fs, path = self.filesystem()
        with errors_named(self):
            return int(fs.size(path))

    def is_dir(self) -> bool:
        if self.is_local:
            return os.path.isdir(self.path)
        fs, path = self.filesystem()
        with errors_named(self):
            return bool(fs.isdir(path))

    def exists(self) -> bool:
        if self.is_local:
            return os.path.exists(self.path)
        fs, path = self.filesystem()
        with errors_named(self):
            return bool(fs.exists(path))


def gcs_endpoint_is_plain_http(options: Mapping[str, Any]) -> bool:
    """Whether gcsfs would talk to a plain-HTTP endpoint (an emulator), as gcsfs decides it:
    ``endpoint_url``, else ``STORAGE_EMULATOR_HOST`` (``http://`` is added when it has no scheme).
    """
    endpoint = options.get("endpoint_url") or os.environ.get("STORAGE_EMULATOR_HOST", "")
    endpoint = str(endpoint)
    return endpoint not in ("", "default") and not endpoint.lower().startswith("https://")


def location(source: str | os.PathLike[str] | Location, storage_options: Any = None) -> Location:
    """A :class:`Location` for a path or URL (``storage_options``: a dict, or None)."""
    if isinstance(source, Location):
        return source
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise NormlabError(
            f"storage_options must be a dict of filesystem options (e.g. "
            f"{{'endpoint_url': ...}}); got a {type(storage_options).__name__}"
        )
    options = tuple(sorted((str(k), v) for k, v in (storage_options or {}).items()))
    text = os.fspath(source)
    if protocol_of(text) == "file" and options:
        options = ()  # local files take no options; keeping them would only split caches
    return Location(text, options)


def location_of(source: Any, storage_options: Any, suffixes: tuple[str, ...]) -> Location | None:
    """The :class:`Location` of a path or URL ending in one of ``suffixes``; None otherwise
    (how an adapter of one file format says "not mine")."""
    if not is_path_like(source):
        return None
    loc = location(source, storage_options)
    return loc if loc.suffix in suffixes else None


def has_magic(url: str) -> bool:
    """Whether a path or URL holds glob characters."""
    if protocol_of(url) in ("http", "https"):
        return False  # "?" starts a query string there, and HTTP servers list nothing
    return any(c in url for c in "*?[")


def expand(loc: Location, *, suffixes: tuple[str, ...] = ()) -> list[Location]:
    """The files a glob or folder names (sorted by URL), or ``[loc]`` for a single file.

    ``suffixes``: keep only files with these suffixes when listing a folder (hidden files and
    folders, whose name starts with a dot or an underscore, are skipped as Spark does).
    """
    fs, path = loc.filesystem()
    with errors_named(loc):
        if has_magic(path):
            found = sorted(p for p in fs.glob(path) if not fs.isdir(p))
        elif loc.is_local and os.path.isdir(path):  # symbolic links to folders followed
            walk = FolderWalk(path)
            found = sorted(
                walk_local(
                    walk,
                    lambda name: not name.startswith((".", "_")),
                    lambda name, _: (
                        not name.startswith((".", "_"))
                        and (not suffixes or os.path.splitext(name)[1].lower() in suffixes)
                    ),
                )
            )
            walk.warn()
        elif fs.isdir(path):
            found = sorted(
                p
                for p in fs.find(path)
                if not _hidden(p[len(path.rstrip("/")) :])
                and (not suffixes or os.path.splitext(p)[1].lower() in suffixes)
            )
        else:
            return [loc]
    return [loc.child(_as_url(loc, fs, p)) for p in found]


@dataclass
class FolderWalk:
    """A local folder walked with :func:`walk_local`, following symbolic links to folders.

    Each real folder is entered once (a link loop, or a second link to a folder walked
    already, is listed in ``repeated_dirs``); each real file is yielded once (a second link to
    one is listed in ``repeated_files`` instead); folders that cannot be listed go to
    ``unreadable``. :meth:`warn` names them all in one warning each.
    """

    root: str
    repeated_dirs: list[str] = field(default_factory=list)
    repeated_files: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def warn(self) -> None:
        def some(items: list[str]) -> str:
            more = f"; ... ({len(items)} in all)" if len(items) > 3 else ""
            return "; ".join(items[:3]) + more

        if self.repeated_dirs:
            warn(
                f"{self.root}: {len(self.repeated_dirs)} folder(s) reached again through "
                "symbolic links (a loop, or a second link to one folder) were read once: "
                f"{some(self.repeated_dirs)}"
            )
        if self.repeated_files:
            warn(
                f"{self.root}: {len(self.repeated_files)} file(s) reached again through "
                f"symbolic links were read once: "
                f"{some(self.repeated_files)}; to weigh a file twice, pass a list of paths"
            )
        if self.unreadable:
            warn(
                f"{self.root}: {len(self.unreadable)} folder(s) could not be listed: "
                f"{some(self.unreadable)}"
            )


def walk_local(
    walk: FolderWalk, enter: Callable[[str], bool], choose: Callable[[str, str], bool]
) -> Iterator[str]:
    """The paths of the files under ``walk.root`` that ``choose(name, relative path)`` keeps,
    depth first in name order (the same every run), following symbolic links to folders;
    ``enter(name)`` says whether to walk into a folder. A file ``choose`` rejects is not
    yielded; a kept one reached a second time is noted in ``walk.repeated_files``."""
    try:
        top = os.stat(walk.root)
    except OSError as exc:
        raise SourceError(f"{walk.root}: cannot list the folder ({exc.strerror or exc})") from None
    seen_dirs = {(top.st_dev, top.st_ino): walk.root}
    seen_files: dict[tuple[int, int], str] = {}
    stack = [(walk.root, "", top.st_dev)]
    while stack:
        folder, relative, device = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            walk.unreadable.append(f"{folder} ({exc.strerror or exc})")
            continue
        subfolders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows a symbolic link
            except OSError:
                is_dir = False
            if is_dir:
                if not enter(entry.name):
                    continue
                try:
                    info = entry.stat()
                except OSError as exc:
                    walk.unreadable.append(f"{entry.path} ({exc.strerror or exc})")
                    continue
                key = (info.st_dev, info.st_ino)
                if key in seen_dirs:
                    walk.repeated_dirs.append(f"{entry.path} (the folder {seen_dirs[key]})")
                    continue
                seen_dirs[key] = entry.path
                subfolders.append((entry.path, f"{relative}{entry.name}/", info.st_dev))
                continue
            if not choose(entry.name, f"{relative}{entry.name}"):
                continue
            file_key: tuple[int, int] | None = (device, entry.inode())
            if entry.is_symlink():
                try:
                    target = os.stat(entry.path)
                    file_key = (target.st_dev, target.st_ino)
                except OSError:  # a dangling link: yielded, and reported as a missing file
                    file_key = None
            if file_key is not None:
                if file_key in seen_files:
                    walk.repeated_files.append(f"{entry.path} (the file {seen_files[file_key]})")
                    continue
                seen_files[file_key] = entry.path
            yield entry.path
        stack.extend(reversed(subfolders))


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/") if part)


def _as_url(loc: Location, fs: Any, path: str) -> str:
    if loc.is_local:
        return path
    return str(fs.unstrip_protocol(path))


@contextlib.contextmanager
def errors_named(loc: Location | str) -> Iterator[None]:
    """Turn what a filesystem raises into a SourceError naming the file (or the extra)."""
    where = loc.path if isinstance(loc, Location) else loc
    try:
        yield
    except NormlabError:
        raise
    except FileNotFoundError:
        raise SourceError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise SourceError(f"{where}: is a folder, not a file") from None
    except PermissionError as exc:
        raise SourceError(
            f"{where}: access denied ({exc}); check the credentials in storage_options"
        ) from None
    except ImportError as exc:
        protocol = protocol_of(where)
        package = _PROTOCOL_PACKAGES.get(protocol, "")
        extra = _EXTRA_OF_PACKAGE.get(package)
        how = (
            f"pip install 'normlab[{extra}]'"
            if extra
            else "pip install " + (package or f"the fsspec implementation of {protocol}://")
        )
        raise MissingExtraError(
            f"{where}: reading {protocol}:// needs {exc}; install it with: {how}"
        ) from None
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise SourceError(f"{where}: cannot open ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - network clients raise their own classes
        raise SourceError(f"{where}: cannot read ({type(exc).__name__}: {exc})") from None
