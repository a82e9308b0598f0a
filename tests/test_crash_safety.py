"""Crash safety: a process killed with SIGKILL while saving never leaves a partial file.

A forked writer saves a statistics file and a normalizer file over and over, alternating two
versions, through normlab's atomic writes (temporary file beside the destination, fsync,
rename). The test kills it at random moments, 60 times, and checks after every kill that each
destination is byte for byte one of the two complete versions and loads. The writer's fsync is
slowed by a few milliseconds — a slow disk — so that most kills land while the temporary file
exists (on tmpfs fsync costs nothing and the window would be short); the test counts those kills.

Resuming a killed ``compute_stats`` run and losing a Dask worker are tested with the engines
(``tests/test_checkpoint.py``, ``tests/test_engines.py``).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import normlab
from normlab import Moments
from normlab.errors import NormlabWarning

N_KILLS = 60
SLOW_FSYNC_S = 0.02


def _versions() -> list[tuple[Moments, normlab.ZScore]]:
    out = []
    for seed in (1, 2):
        x = np.random.default_rng(seed).integers(0, 256, (64, 4096), dtype=np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NormlabWarning)
            out.append((Moments.from_array(x), normlab.ZScore().fit(x.astype(np.float32))))
    return out


def _writer(directory: str, versions, first: int, started) -> None:
    """The child: save both files forever, alternating the two versions from ``first``."""
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:  # a slow disk widens the window a crash can hit
        time.sleep(SLOW_FSYNC_S)
        real_fsync(fd)

    os.fsync = slow_fsync
    started.set()
    i = first
    while True:
        moments, normalizer = versions[i % 2]
        moments.save(os.path.join(directory, "stats.safetensors"))
        normalizer.save(os.path.join(directory, "zscore.safetensors"))
        i += 1


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_sigkill_during_saves_leaves_old_or_new_complete_file(tmp_path):
    versions = _versions()
    reference = tmp_path / "reference"
    work = tmp_path / "work"
    reference.mkdir()
    work.mkdir()
    expected: dict[str, dict[str, int]] = {"stats.safetensors": {}, "zscore.safetensors": {}}
    start = time.perf_counter()
    for index, (moments, normalizer) in enumerate(versions):
        for name, obj in (("stats.safetensors", moments), ("zscore.safetensors", normalizer)):
            obj.save(str(reference / f"{index}-{name}"))
            expected[name][_digest(reference / f"{index}-{name}")] = index
    # The kill window scales with how long a save takes on this machine now (a loaded machine
    # saves slower): about three of the writer's save cycles, never less than 80 ms.
    cycle = (time.perf_counter() - start) / len(versions)
    window = max(0.08, 3 * (cycle + 4 * SLOW_FSYNC_S))
    versions[0][0].save(str(work / "stats.safetensors"))
    versions[0][1].save(str(work / "zscore.safetensors"))

    context = multiprocessing.get_context("fork")
    rng = random.Random(20241129)
    in_window = 0
    seen = {name: set() for name in expected}
    for _ in range(N_KILLS):
        started = context.Event()
        child = context.Process(
            target=_writer, args=(str(work), versions, rng.randrange(2), started), daemon=True
        )
        child.start()
        assert started.wait(30), "the writer did not start"
        time.sleep(rng.uniform(0.0, window))
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        assert child.exitcode == -signal.SIGKILL
        leftovers = sorted(work.glob(".*.tmp"))
        in_window += bool(leftovers)
        for tmp in leftovers:
            tmp.unlink()
        for name, digests in expected.items():
            digest = _digest(work / name)
            assert digest in digests, f"{name} is neither the old nor the new complete file"
            seen[name].add(digests[digest])
        loaded = normlab.load(str(work / "stats.safetensors"))
        assert any(loaded == moments for moments, _ in versions)
    assert sorted(os.listdir(work)) == ["stats.safetensors", "zscore.safetensors"]
    assert in_window >= N_KILLS // 3, f"only {in_window} of {N_KILLS} kills hit a write"
    assert all(len(v) == 2 for v in seen.values()), "both versions should have been seen"
    print(f"{N_KILLS} SIGKILLs, {in_window} while a temporary file existed; no partial file")
