"""Resumable runs: a run killed with SIGKILL resumes where its checkpoint ends, reruns only the
unfinished tasks and ends with the same bits; checkpoints of other inputs are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import normlab
from normlab.engines.checkpoint import FILE_NAME
from normlab.errors import FileFormatError, NormlabError
from normlab.io import read_file

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # workers import engine_tasks by name
from engine_tasks import executed, slow_source  # noqa: E402

N_TASKS = 16

SCRIPT = textwrap.dedent(
    """
    import sys
    import normlab
    from engine_tasks import slow_source

    if __name__ == "__main__":  # worker processes import this file again
        path, marker, checkpoint, engine, scheduler, out = sys.argv[1:]
        source = slow_source(path, {n_tasks}, delay=0.4, marker=marker)
        stats = normlab.compute_stats(
            source, engine=engine, workers=2, scheduler=scheduler or None,
            checkpoint=checkpoint, checkpoint_every=1, progress=False,
        )
        stats.save(out)
    """
).format(n_tasks=N_TASKS)


@pytest.fixture(scope="module")
def floats(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "floats.npy"
    rng = np.random.default_rng(3)
    np.save(path, rng.normal(50.0, 1e-4, (800, 9)) * rng.choice([1.0, 1e8], (1, 9)))
    return str(path)


def finished_in(checkpoint: Path) -> list[int]:
    meta, _ = read_file(checkpoint / FILE_NAME)
    return meta["finished_tasks"]


def kill_then_resume(tmp_path: Path, data: str, engine: str, scheduler: str = "") -> None:
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    checkpoint, out = tmp_path / "ckpt", tmp_path / "stats.safetensors"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }

    def command(marker: str) -> list[str]:
        return [
            sys.executable,
            str(script),
            data,
            marker,
            str(checkpoint),
            engine,
            scheduler,
            str(out),
        ]

    first = subprocess.Popen(command(str(tmp_path / "ran1.txt")), env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if (checkpoint / FILE_NAME).exists() and len(finished_in(checkpoint)) >= 3:
            break
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL
    done = set(finished_in(checkpoint))
    assert 3 <= len(done) < N_TASKS, "kill the run after some but not all tasks were saved"
    assert not out.exists()

    subprocess.run(command(str(tmp_path / "ran2.txt")), env=env, check=True, timeout=300)
    tasks = slow_source(data, N_TASKS, delay=0).tasks
    remaining = [f"{t.start}:{t.stop}" for i, t in enumerate(tasks) if i not in done]
    assert sorted(executed(str(tmp_path / "ran2.txt"))) == sorted(
        remaining
    )  # only these, once each
    uninterrupted = normlab.compute_stats(slow_source(data, N_TASKS, delay=0))
    resumed = normlab.load(out)
    assert resumed == uninterrupted
    assert np.array_equal(resumed.var(), uninterrupted.var())


def test_sigkill_then_resume_local(tmp_path, floats):
    kill_then_resume(tmp_path, floats, "local")


def test_sigkill_then_resume_dask(tmp_path, floats):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        kill_then_resume(tmp_path, floats, "dask", cluster.scheduler_address)


def test_finished_checkpoint_runs_nothing_again(tmp_path, floats):
    marker = str(tmp_path / "ran.txt")
    first = normlab.compute_stats(
        slow_source(floats, 5, delay=0, marker=marker), checkpoint=tmp_path / "c"
    )
    assert len(executed(marker)) == 5
    again = normlab.compute_stats(
        slow_source(floats, 5, delay=0, marker=marker), checkpoint=tmp_path / "c"
    )
    assert len(executed(marker)) == 5
    assert again == first == normlab.compute_stats(slow_source(floats, 5, delay=0))


def test_changed_inputs_are_refused_saying_what_changed(tmp_path):
    path = tmp_path / "x.npy"
    x = np.arange(600, dtype=np.uint8).reshape(100, 6)
    np.save(path, x)
    checkpoint = tmp_path / "c"
    normlab.compute_stats(str(path), chunk_size=10, checkpoint=checkpoint)
    with pytest.raises(NormlabError, match=r"axis: 'feature' then, 'channel' now"):
        normlab.compute_stats(str(path), "channel", chunk_size=10, checkpoint=checkpoint)
    with pytest.raises(NormlabError, match=r"the tasks differ \(2 then, 1 now"):
        normlab.compute_stats(str(path), chunk_size=20, checkpoint=checkpoint)
    np.save(path, x[::-1])  # same size, other content
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(NormlabError, match=rf"{path} changed: modified since"):
        normlab.compute_stats(str(path), chunk_size=10, checkpoint=checkpoint)
    np.save(path, np.zeros((100, 7), np.uint8))
    with pytest.raises(NormlabError, match=rf"{path} changed: \d+ bytes then, \d+ bytes now"):
        normlab.compute_stats(str(path), chunk_size=10, checkpoint=checkpoint)


def test_cli_checkpoint_resume_and_refusal(tmp_path):
    from normlab.cli import app

    path = tmp_path / "x.npy"
    np.save(path, np.arange(300, dtype=np.uint16).reshape(50, 6))
    runner = CliRunner()
    base = [
        "stats",
        str(path),
        "-o",
        str(tmp_path / "s.safetensors"),
        "--checkpoint",
        str(tmp_path / "c"),
        "-q",
    ]
    assert runner.invoke(app, [*base, "--checkpoint-every", "1"]).exit_code == 0
    assert runner.invoke(app, base).exit_code == 0
    refused = runner.invoke(app, [*base, "--axis", "global"])
    assert refused.exit_code == 1
    assert (
        "checkpoint was made for other inputs or options: axis: 'feature' then, 'global' now"
        in refused.output
    )


def test_bad_checkpoints(tmp_path, floats):
    source = slow_source(floats, 2, delay=0)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / FILE_NAME).write_bytes(b"not a checkpoint at all")
    with pytest.raises(FileFormatError, match="not a normlab file"):
        normlab.compute_stats(source, checkpoint=tmp_path / "c")
    normlab.compute_stats(np.zeros((3, 2)), engine="serial").save(tmp_path / "m.safetensors")
    (tmp_path / "d").mkdir()
    os.replace(tmp_path / "m.safetensors", tmp_path / "d" / FILE_NAME)
    with pytest.raises(FileFormatError, match="holds a Moments, not a checkpoint"):
        normlab.compute_stats(source, checkpoint=tmp_path / "d")
    (tmp_path / "file").write_text("")
    with pytest.raises(NormlabError, match="must be a folder"):
        normlab.compute_stats(source, checkpoint=tmp_path / "file")
    with pytest.raises(NormlabError, match="checkpoint_every must be a positive"):
        normlab.compute_stats(source, checkpoint=tmp_path / "e", checkpoint_every=0)


def test_cli_comoments_checkpoint_resumes_like_stats(tmp_path):
    from normlab.cli import app

    path = tmp_path / "x.npy"
    np.save(path, np.arange(300, dtype=np.uint16).reshape(50, 6))
    runner = CliRunner()
    out = tmp_path / "c.safetensors"
    base = ["comoments", str(path), "-o", str(out), "--checkpoint", str(tmp_path / "c"), "-q"]
    first = runner.invoke(app, [*base, "--checkpoint-every", "1", "--checkpoint-key", "k"])
    assert first.exit_code == 0, first.output
    saved = normlab.load(out)
    again = runner.invoke(app, [*base, "--checkpoint-key", "k", "--checkpoint-fingerprint", "auto"])
    assert again.exit_code == 0, again.output
    assert normlab.load(out) == saved
    refused = runner.invoke(app, [*base, "--checkpoint-key", "other"])
    assert refused.exit_code == 1 and "--checkpoint-key: 'k' then, 'other' now" in refused.output
