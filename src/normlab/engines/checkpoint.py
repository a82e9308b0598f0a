"""Resumable runs: the merged state and the finished tasks, saved atomically.

A checkpoint folder holds one file, ``checkpoint.safetensors``: the merged statistic's
tensors, and in its JSON metadata the finished task indices and a *fingerprint* of the run —
the empty statistic's settings (axis, channel axis, NaN policy, histograms, ...), each task's
kind, label, size and chunking, and every input file's path, size and modification time.
Tasks are merged in task order, so the finished tasks are always the first ones, and a
resumed run that merges the rest ends with the same bits as a run never interrupted. A
checkpoint whose fingerprint differs from the run's is refused, saying what changed.
In-memory arrays are fingerprinted by a hash of their contents. Inputs with no identity —
generators, iterables of batches, PyTorch datasets — are refused unless the caller names
the data with a ``key``. Files are fingerprinted by size and modification time, plus a hash
of their contents: ``"sample"`` hashes 17 blocks of 4 KiB spread over the file (cheap;
default for runs of at most 1000 files), ``"content"`` hashes every byte, ``"stat"`` none
(``"auto"``: sample, or stat above 1000 files). A file rewritten with the same size and a
restored modification time (``cp -p``, ``rsync -t``) is caught by its content hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import FileFormatError, NormlabError
from ..provenance import Provenance

FILE_NAME = "checkpoint.safetensors"
DEFAULT_EVERY = 10  # tasks between two saves
_LISTED_FILES = 20_000  # above this many input files, changes are reported per task


def _task_files(task: Any) -> list[str]:
    """The files a task reads: its ``path`` and its ``files`` (the known task kinds)."""
    found = []
    path = getattr(task, "path", None)
    if isinstance(path, (str, os.PathLike)):
        found.append(os.fspath(path))
    files = getattr(task, "files", None)
    if isinstance(files, (list, tuple)):
        found.extend(os.fspath(f) for f in files)
    return found


FINGERPRINTS = ("auto", "stat", "sample", "content")
_AUTO_SAMPLE_FILES = 1000
_BLOCK = 4096
_BLOCKS = 16
# Task kinds whose data has no identity normlab can check (a generator, a dataset object).
_UNIDENTIFIED = frozenset({"IterableTask", "MapDatasetTask"})


def _file_state(path: str, mode: str = "stat") -> list[Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    state: list[Any] = [st.st_size, st.st_mtime_ns]
    if mode in ("sample", "content"):
        from ..io import check_regular

        check_regular(path)
        digest = hashlib.blake2b(digest_size=16)
        try:
            with open(path, "rb") as handle:
                if mode == "content" or st.st_size <= _BLOCK * (_BLOCKS + 1):
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                else:
                    for i in range(_BLOCKS + 1):
                        handle.seek(min(i * st.st_size // _BLOCKS, st.st_size - _BLOCK))
                        digest.update(handle.read(_BLOCK))
        except OSError:
            return None
        state.append(f"{mode}:{digest.hexdigest()}")
    return state


def _array_digest(task: Any) -> str:
    import numpy as np

    rows = np.ascontiguousarray(task.array[task.start : task.stop])
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str((rows.shape, rows.dtype.str)).encode())
    digest.update(rows.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def _task_description(task: Any) -> str:
    parts = [type(task).__name__, str(task.label), f"n_items={task.n_items}"]
    for name in ("chunk_rows", "chunk_size"):
        if getattr(task, name, None) is not None:
            parts.append(f"{name}={getattr(task, name)}")
    options = getattr(task, "options", None)
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        parts.append(json.dumps(dataclasses.asdict(options), sort_keys=True, default=str))
    return " ".join(parts)


def fingerprint(
    tasks: list[Any],
    make_empty: Callable[[], Any],
    *,
    key: str | None = None,
    mode: str = "auto",
) -> dict[str, Any]:
    """What identifies a run's inputs and options (JSON).

    Raises :class:`NormlabError` for inputs that cannot be identified when no ``key`` names
    them: a checkpoint must never combine two different inputs.
    """
    if mode not in FINGERPRINTS:
        raise NormlabError(f"checkpoint_fingerprint must be one of {FINGERPRINTS}; got {mode!r}")
    if key is not None and (not isinstance(key, str) or not key):
        raise NormlabError(f"checkpoint_key must be a non-empty string; got {key!r}")
    if mode == "auto":
        n_files = sum(len(_task_files(t)) for t in tasks)
        mode = "sample" if n_files <= _AUTO_SAMPLE_FILES else "stat"
    files: dict[str, list[Any] | None] = {}
    task_digests = []
    for task in tasks:
        digest = hashlib.sha256()
        paths = _task_files(task)
        own = getattr(task, "fingerprint", None)
        if callable(own):
            digest.update(str(own()).encode())
        elif type(task).__name__ == "ArrayTask":
            digest.update(_array_digest(task).encode())
        elif not paths and type(task).__name__ in _UNIDENTIFIED and key is None:
            raise NormlabError(
                f"checkpoint: {task.label} has no identity normlab can check (a generator, "
                "an iterable of batches or a dataset object may hold other data in a later run, "
                "and resuming would mix the two). Pass checkpoint_key='NAME' (a name for this "
                "data), changing it whenever the data changes, or run without a "
                "checkpoint"
            )
        for path in paths:
            state = files.setdefault(path, _file_state(path, mode))
            digest.update(json.dumps([path, state]).encode())
        task_digests.append(digest.hexdigest()[:16])
    return {
        "statistic": make_empty().metadata(),
        "tasks": [_task_description(t) for t in tasks],
        "task_files": task_digests,
        "files": files if len(files) <= _LISTED_FILES else None,
        "key": key,
        "fingerprint": mode,
    }


def _describe_file(state: list[int] | None) -> str:
    return "missing" if state is None else f"{state[0]} bytes"


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed between two fingerprints, in words."""
    changes = []
    old_stat, new_stat = old.get("statistic", {}), new["statistic"]
    for key in sorted(set(old_stat) | set(new_stat)):
        if old_stat.get(key) != new_stat.get(key):
            changes.append(f"{key}: {old_stat.get(key)!r} then, {new_stat.get(key)!r} now")
    if old.get("key") != new.get("key"):
        changes.append(f"checkpoint_key: {old.get('key')!r} then, {new.get('key')!r} now")
    if old.get("fingerprint", "stat") != new.get("fingerprint"):
        changes.append(
            f"checkpoint_fingerprint: {old.get('fingerprint', 'stat')!r} then, "
            f"{new.get('fingerprint')!r} now"
        )
    old_tasks, new_tasks = old.get("tasks", []), new["tasks"]
    if old_tasks != new_tasks:
        first = next(
            (i for i, (a, b) in enumerate(zip(old_tasks, new_tasks, strict=False)) if a != b),
            min(len(old_tasks), len(new_tasks)),
        )
        then = old_tasks[first] if first < len(old_tasks) else "none"
        now = new_tasks[first] if first < len(new_tasks) else "none"
        changes.append(
            f"the tasks differ ({len(old_tasks)} then, {len(new_tasks)} now; task {first} was "
            f"[{then}], is [{now}])"
        )
    old_files, new_files = old.get("files"), new["files"]
    if old_files is not None and new_files is not None:
        for path in sorted(set(old_files) | set(new_files)):
            if path not in new_files:
                changes.append(f"{path} is no longer an input")
            elif path not in old_files:
                changes.append(f"{path} is a new input")
            elif old_files[path] != new_files[path]:
                a, b = old_files[path], new_files[path]
                if a is None or b is None or a[0] != b[0]:
                    how = f"{_describe_file(a)} then, {_describe_file(b)} now"
                elif a[1] == b[1]:
                    how = "other contents (same size and modification time)"
                else:
                    how = "modified since (same size, new modification time)"
                changes.append(f"{path} changed: {how}")
    if not changes and old.get("task_files") != new["task_files"] and old_tasks == new_tasks:
        changed = [
            new_tasks[i]
            for i, (a, b) in enumerate(zip(old["task_files"], new["task_files"], strict=False))
            if a != b
        ]
        changes.append(f"the data of {len(changed)} task(s) changed, the first: [{changed[0]}]")
    return changes


class _Snapshot:
    """What is saved: a statistic, the sources' record, the finished tasks and the fingerprint."""

    def __init__(
        self, stats: Any, record: Provenance, finished: list[int], print_: dict[str, Any]
    ) -> None:
        self.stats, self.record, self.finished, self.fingerprint = stats, record, finished, print_

    def metadata(self) -> dict[str, Any]:
        return {
            "class": "Checkpoint",
            "statistic": self.stats.metadata(),
            "provenance": self.record.metadata(),
            "finished_tasks": self.finished,
            "fingerprint": self.fingerprint,
        }

    def to_tensors(self) -> dict[str, Any]:
        return self.stats.to_tensors()


class Checkpoint:
    """The checkpoint of one run in ``folder`` (see the module's description)."""

    def __init__(
        self,
        folder: str | os.PathLike,
        tasks: list[Any],
        make_empty: Callable[[], Any],
        *,
        every: int | None = None,
        key: str | None = None,
        fingerprint_mode: str = "auto",
    ) -> None:
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise NormlabError(f"checkpoint_every must be a positive number of tasks; got {every}")
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise NormlabError(f"{self.folder}: the checkpoint must be a folder; this is a file")
        self.path = self.folder / FILE_NAME
        self.every = int(every or DEFAULT_EVERY)
        self.fingerprint = fingerprint(tasks, make_empty, key=key, mode=fingerprint_mode)
        self.n_tasks = len(tasks)
        self.done: set[int] = set()
        self._unsaved = 0

    def resume(self, empty: Any, record: Provenance) -> tuple[Any, Provenance, set[int]]:
        """The saved state, record and finished tasks, or ``(empty, record, set())``."""
        from ..io import from_parts, read_file

        if not self.path.exists():
            return empty, record, set()
        meta, tensors = read_file(self.path)
        if meta.get("class") != "Checkpoint":
            raise FileFormatError(f"{self.path}: holds a {meta.get('class')}, not a checkpoint")
        changes = differences(meta.get("fingerprint") or {}, self.fingerprint)
        if changes:
            raise NormlabError(
                f"{self.folder}: the checkpoint was made for other inputs or options: "
                f"{'; '.join(changes)}. Delete the folder or choose another to start over"
            )
        stat_meta = meta["statistic"]
        try:
            stats = from_parts(stat_meta, tensors)
            saved = Provenance.from_metadata(meta.get("provenance") or {}, record.granularity)
            finished = {int(i) for i in meta["finished_tasks"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise FileFormatError(
                f"{self.path}: corrupt checkpoint ({type(exc).__name__}: {exc})"
            ) from None
        if finished != set(range(len(finished))) or len(finished) > self.n_tasks:
            raise FileFormatError(
                f"{self.path}: corrupt checkpoint (finished tasks are not the first ones)"
            )
        self.done = finished
        return stats, saved, finished

    def finished(self, index: int, total: Any, record: Provenance) -> None:
        """Record a merged task; save every ``every`` tasks."""
        self.done.add(index)
        self._unsaved += 1
        if self._unsaved >= self.every:
            self.save(total, record)

    def save(self, total: Any, record: Provenance) -> None:
        from ..io import save_object

        save_object(_Snapshot(total, record, sorted(self.done), self.fingerprint), self.path)
        self._unsaved = 0
