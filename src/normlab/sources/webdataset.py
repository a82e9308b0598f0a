"""WebDataset shards: ``.tar`` files whose members are the images (and labels) of samples.

* **Shards**: one ``.tar`` path, a list of them, a brace pattern
  (``"shard-{000..099}.tar"``, ``"{train,val}-{0..3}.tar"``), expanded in order, or a glob
  (``"shards/*.tar"``, sorted); local paths or fsspec URLs
  (``s3://bucket/train-{000..099}.tar`` with ``storage_options``).
* **Streaming**: the tar headers are read by normlab (512-byte blocks, ustar, GNU long names
  and pax paths), skipping over the member data; a task then reads its members' bytes
  straight from the shard, one member at a time. Nothing is extracted to disk.
* **Members**: every member whose name ends with an image suffix (as for image folders; pick
  others with ``glob=``, e.g. ``"*.seg.png"``); labels and other members are skipped. Images
  are decoded as in an image folder (same decoders, ``mode=``, ``resize=``): the statistics
  equal those of the same images in a folder.
* **Tasks** hold at most :data:`~normlab.sources.images.FILES_PER_TASK` members, so a few
  large shards still keep every worker busy.
* **Errors** name the shard and the member (``shard-003.tar[0042.jpg]``), or the byte offset
  of a damaged header; ``skip_bad=True`` skips a bad member (and the rest of a shard after a
  damaged header) and lists it in the statistics.
* **Truncation**: a shard must end with tar's end-of-archive marker (a zero block). One cut
  anywhere (inside a header, a member, the padding after it, or between members) is a
  ``SourceError`` naming the shard and the byte where it ends, or with ``skip_bad=True`` the
  members before the cut are read and the rest of the shard is listed as skipped.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import SourceError
from ..provenance import recorder
from . import Source, register_source
from .fs import Location, expand, has_magic, location
from .images import (
    FILES_PER_TASK,
    IMAGE_SUFFIXES,
    BadImage,
    ImageBatches,
    ImageOptions,
    check_file_size,
    image_options,
)

BLOCK = 512
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


MAX_SHARDS = 1_000_000  # names a brace pattern may expand to


def _n_choices(body: str) -> int:
    numeric = _RANGE.match(body)
    if numeric:
        return abs(int(numeric.group(2)) - int(numeric.group(1))) + 1
    return body.count(",") + 1


def expand_braces(pattern: str) -> list[str]:
    """``"s-{00..02}.tar"`` → ``["s-00.tar", "s-01.tar", "s-02.tar"]``; ``{a,b}`` lists choices.

    >>> expand_braces("s-{08..10}-{a,b}.tar")
    ['s-08-a.tar', 's-08-b.tar', 's-09-a.tar', 's-09-b.tar', 's-10-a.tar', 's-10-b.tar']
    """
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    count = math.prod(_n_choices(m.group(1)) for m in _BRACE.finditer(pattern))
    if count > MAX_SHARDS:  # counted before any list is made: a typo must not take the RAM
        raise SourceError(f"{pattern}: names {count} shards; at most {MAX_SHARDS} are read at once")
    body = match.group(1)
    numeric = _RANGE.match(body)
    if numeric:
        first, last = numeric.group(1), numeric.group(2)
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        step = 1 if int(last) >= int(first) else -1
        choices = [str(i).zfill(width) for i in range(int(first), int(last) + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        raise SourceError(
            f"{pattern}: cannot expand {{{body}}}; use {{000..099}} for a range or {{a,b}} "
            "for choices"
        )
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [name for c in choices for name in expand_braces(head + c + tail)]


@dataclass(frozen=True)
class Member:
    """One regular file in a shard: where its bytes start and how many there are."""

    name: str
    offset: int
    size: int


def _open(path: str, storage_options: tuple[tuple[str, Any], ...] = ()) -> Any:
    """A shard opened for reading: a local file, or an fsspec URL (read in blocks)."""
    loc = Location(path, storage_options)
    if loc.is_local:
        from ..io import check_regular

        check_regular(loc.path)  # a FIFO among the shards a glob names would block forever
        return open(loc.path, "rb")  # noqa: SIM115 - the caller closes it
    return loc.open()


def _number(field: bytes, where: str) -> int:
    """A tar numeric field: octal text, or base-256 when the high bit is set (GNU)."""
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise SourceError(f"{where}: corrupt tar header (number field {field!r})") from None


def _pax_path(data: bytes) -> str | None:
    """The ``path`` record of a pax extended header (``"%d path=...\\n"`` records)."""
    position = 0
    while position < len(data):
        space = data.find(b" ", position)
        if space < 0:
            break
        length = int(data[position:space])
        record = data[space + 1 : position + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
        position += length
    return None


def index_shard(
    path: str, storage_options: tuple[tuple[str, Any], ...] = ()
) -> tuple[list[Member], str | None]:
    """The regular members of a tar shard, reading only the headers.

    Returns the members and, when a damaged header stops the scan, the reason (the members
    before it are kept: ``skip_bad`` reads them and lists the rest as skipped).
    """
    members: list[Member] = []
    long_name: str | None = None
    try:
        handle = _open(path, storage_options)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such shard") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with handle:
        size = handle.seek(0, os.SEEK_END)
        offset = 0
        while True:
            handle.seek(offset)
            header = handle.read(BLOCK) if offset < size else b""
            if offset == 0:
                _refuse_compressed(path, header)
            if header == bytes(BLOCK):  # the end-of-archive marker: what tar writes last
                return members, None
            if len(header) < BLOCK:
                return members, _truncated(offset, size, len(header), members)
            where = f"{path} (byte {offset})"
            stored = _number(header[148:156], where)
            if stored != sum(header) - sum(header[148:156]) + 8 * 32:
                after = f" after {members[-1].name}" if members else ""
                return members, f"corrupt tar header at byte {offset}{after}"
            length = _number(header[124:136], where)
            kind = header[156:157]
            data_at = offset + BLOCK
            if data_at + length > size:
                name = long_name or header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
                return members, (
                    f"truncated: member {name} runs past the end of the file (at byte {size})"
                )
            if kind in (b"L", b"x"):  # the next member's long name / pax header
                handle.seek(data_at)
                data = handle.read(length)
                long_name = (
                    data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                    if kind == b"L"
                    else _pax_path(data) or long_name
                )
            else:
                if kind in (b"0", b"\0", b"7"):  # regular files
                    name = long_name
                    if name is None:
                        name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                        prefix = header[345:500].split(b"\0", 1)[0]
                        if header[257:262] == b"ustar" and prefix:
                            name = prefix.decode("utf-8", "surrogateescape") + "/" + name
                    members.append(Member(name, data_at, length))
                long_name = None
            offset = data_at + -(-length // BLOCK) * BLOCK


COMPRESSED = {  # magic bytes of whole-file compressors (a shard is an uncompressed tar)
    b"\x1f\x8b": ("gzip", "gunzip -k"),
    b"BZh": ("bzip2", "bunzip2 -k"),
    b"\xfd7zXZ\x00": ("xz", "unxz -k"),
    b"\x28\xb5\x2f\xfd": ("zstd", "unzstd"),
}


def _refuse_compressed(path: str, head: bytes) -> None:
    """A compressed shard is not a damaged one: say what it is and how to read it."""
    for magic, (name, command) in COMPRESSED.items():
        if head.startswith(magic):
            base = path.rstrip("/").rsplit("/", 1)[-1]
            raise SourceError(
                f"{path}: {name}-compressed; normlab reads uncompressed tar shards (WebDataset's "
                f"usual form): decompress it first (e.g. `{command} {base}`)"
            )


def _truncated(offset: int, size: int, got: int, members: list[Member]) -> str:
    """Why a shard that ends before its end-of-archive marker is truncated."""
    after = f" after member {members[-1].name}" if members else ""
    if got:
        return f"truncated tar header at byte {offset} (the file ends at byte {size})"
    if offset > size:
        return (
            f"truncated: the file ends at byte {size}, inside the padding{after} (a tar file "
            "is whole 512-byte blocks); the members after it are lost"
        )
    return (
        f"truncated: the file ends at byte {size}{after} without the end-of-archive marker "
        "(the zero blocks tar writes last); the members after it are lost"
    )


def _read_member(handle: Any, member: Member) -> bytes:
    check_file_size(member.size)  # the header's size, checked before it sizes a read
    handle.seek(member.offset)
    data = handle.read(member.size)
    if len(data) != member.size:
        raise BadImage(f"truncated member ({len(data)} of {member.size} bytes)")
    if not data:
        raise BadImage("empty member")
    return bytes(data)


@dataclass
class TarImageTask(ImageBatches):
    """At most ``FILES_PER_TASK`` image members of one shard (picklable: path and offsets)."""

    shard: str
    members_: list[Member]
    options: ImageOptions
    label: str
    damaged: str | None = None  # a header after these members could not be read
    storage_options: tuple[tuple[str, Any], ...] = ()
    extra: ClassVar[str] = "webdataset"

    # mypy: a read-only property overrides the base's class attribute (ignored below)
    @property
    def n_items(self) -> int:  # type: ignore[override]
        return len(self.members_)

    def fingerprint(self) -> str:
        """The shard (size and modification time when local) and the members' places."""
        state = Location(self.shard, self.storage_options).local_state()
        places = [(m.offset, m.size) for m in self.members_[:1] + self.members_[-1:]]
        return f"{self.shard} {state} {len(self.members_)} {places}"

    def members(self) -> Iterator[tuple[str, Callable[[], bytes]]]:
        try:
            handle = _open(self.shard, self.storage_options)
        except OSError as exc:
            raise SourceError(f"{self.shard}: cannot read ({exc.strerror or exc})") from None
        with handle:
            for member in self.members_:
                yield (
                    f"{self.shard}[{member.name}]",
                    functools.partial(_read_member, handle, member),
                )

    def chunks(self) -> Iterator[Any]:
        yield from super().chunks()
        if self.damaged is not None:
            # only reached with skip_bad: without it the source refused the shard
            recorder().skipped(self.shard, f"{self.damaged}; the rest of the shard")


def _shards(source: Any) -> list[str] | None:
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if not name.lower().endswith(".tar"):
            return None
        return expand_braces(name)
    if isinstance(source, (list, tuple)) and source:
        if all(isinstance(s, (str, os.PathLike)) for s in source):
            names = [os.fspath(s) for s in source]
            if all(n.lower().endswith(".tar") for n in names):
                return [e for n in names for e in expand_braces(n)]
    return None


def _globbed(name: str, storage_options: dict[str, Any] | None) -> list[str]:
    """The shards a glob names, sorted (``[name]`` when it holds no glob characters)."""
    if not has_magic(name):
        return [name]
    loc = location(name, storage_options)
    if loc.is_local:
        found = sorted(glob.glob(loc.path))
    else:
        found = [match.url for match in expand(loc)]
    if not found:
        raise SourceError(f"{name}: no shard matches this pattern")
    return found


def _is_image_member(name: str, glob: str | None) -> bool:
    if glob is not None:  # as in folders: a pattern without "/" matches the base name
        return fnmatch.fnmatchcase(name if "/" in glob else name.rsplit("/", 1)[-1], glob)
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def webdataset_source(
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
    """WebDataset ``.tar`` shards (a path, a list or a brace pattern); None for other input."""
    named = _shards(source)
    if named is None:
        return None
    shards = [found for name in named for found in _globbed(name, storage_options)]
    loc_options = location(shards[0], storage_options).options
    options = image_options(mode, resize, interpolation, skip_bad, chunk_size)
    tasks: list[TarImageTask] = []
    n_other = 0
    for shard in shards:
        members, damaged = index_shard(shard, loc_options)
        if damaged is not None and not skip_bad:
            raise SourceError(
                f"{shard}: {damaged}; pass skip_bad=True to read the members before it"
            )
        images = [m for m in members if _is_image_member(m.name, glob)]
        n_other += len(members) - len(images)
        # a damaged shard without images still gets a task: it reports the skipped rest
        starts = range(0, len(images), FILES_PER_TASK) or range(1 if damaged else 0)
        for s in starts:
            part = images[s : s + FILES_PER_TASK]
            last = s + FILES_PER_TASK >= len(images)
            tasks.append(
                TarImageTask(
                    shard,
                    part,
                    options,
                    f"{shard} members [{s}:{s + len(part)}]",
                    damaged if last else None,
                    loc_options,
                )
            )
    n_images = sum(t.n_items for t in tasks)
    what = f"{len(shards)} shard(s) ({shards[0]}, ...)" if len(shards) > 1 else shards[0]
    if n_images == 0 and all(t.damaged is None for t in tasks):
        looked = repr(glob) if glob else "members with an image suffix"
        raise SourceError(
            f"{what}: no images found (looked for {looked}; {n_other} other member(s))"
        )
    info = {
        "kind": "images",
        "n_files": n_images,
        "n_shards": len(shards),
        "ignored_files": n_other,
    }
    return Source(tasks, f"{n_images} images in {what}", info)


register_source(webdataset_source)
