"""Outputs never overwrite inputs, special files are refused, killed writes leave nothing behind.

Real files, real links, real FIFOs and real killed processes.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import normlab
from normlab.cli import OUTPUT_PARAMETERS, app
from normlab.errors import NormlabError
from normlab.io import atomic_write, reading

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def files(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (40, 4, 3), dtype=np.uint8)
    data = tmp_path / "data.npy"
    np.save(data, x)
    stats = tmp_path / "stats.safetensors"
    normlab.compute_stats(x).save(stats)
    norm = tmp_path / "norm.safetensors"
    normlab.ZScore().fit(x).save(norm)
    return {"data": data, "stats": stats, "norm": norm, "dir": tmp_path}


def _aliases(path, tmp_path, name):
    """The input itself, a symbolic link to it and a hard link of it."""
    sym = tmp_path / f"sym-{name}{path.suffix}"
    hard = tmp_path / f"hard-{name}{path.suffix}"
    sym.symlink_to(path)
    os.link(path, hard)
    return [path, sym, hard]


# Every writing command, with the input it reads: (name, argv with {out} for the output).
WRITING_COMMANDS = [
    ("stats", ["stats", "{data}", "-o", "{out}", "-q"], "data"),
    ("fit-data", ["fit", "{data}", "-o", "{out}", "-q"], "data"),
    ("fit-stats", ["fit", "--stats", "{stats}", "-o", "{out}"], "stats"),
    ("apply-data", ["apply", "{data}", "-n", "{norm}", "-o", "{out}", "-q"], "data"),
    ("apply-norm", ["apply", "{data}", "-n", "{norm}", "-o", "{out}", "-q"], "norm"),
    ("export", ["export", "{norm}", "--to", "json", "-o", "{out}"], "norm"),
    ("export-torch", ["export", "{norm}", "--to", "torch", "-o", "{out}"], "norm"),
    ("diagnose", ["diagnose", "{data}", "--save-comoments", "{out}", "-q"], "data"),
    ("comoments", ["comoments", "{data}", "-o", "{out}", "-q"], "data"),
    ("stats-checkpoint", ["stats", "{data}", "-o", "x.st", "--checkpoint", "{out}", "-q"], "data"),
]


@pytest.mark.parametrize("name,argv,victim", WRITING_COMMANDS, ids=[c[0] for c in WRITING_COMMANDS])
def test_no_command_overwrites_its_input(files, name, argv, victim):
    tmp_path = files["dir"]
    before = {k: files[k].read_bytes() for k in ("data", "stats", "norm")}
    for alias in _aliases(files[victim], tmp_path, name):
        args = [a.format(out=alias, **files) for a in argv]
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "the output is the input" in result.output
        assert "Traceback" not in result.output
        assert {k: files[k].read_bytes() for k in before} == before


def test_every_command_with_an_output_is_covered():
    """A new writing command must name its output so that the guard knows it."""
    import typer.main

    group = typer.main.get_command(app)
    writers = {
        name
        for name, cmd in group.commands.items()  # type: ignore[attr-defined]
        if any(p.name in OUTPUT_PARAMETERS for p in cmd.params)
    }
    tested = {argv[0] for _, argv, _ in WRITING_COMMANDS}
    assert writers - {"compare", "demo"} <= tested  # the lab writes folders (tested below)


def test_files_written_inside_an_output_folder_never_replace_an_input(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    data = out / "results.json"  # an input named like a report file, inside --out
    data.write_bytes(b"precious")
    with reading(data), pytest.raises(NormlabError, match="the output is the input"):
        with atomic_write(data) as handle:
            handle.write(b"x")
    assert data.read_bytes() == b"precious"


def test_api_apply_file_refuses_a_link_to_the_input(files):
    from normlab.apply import apply_file

    norm = normlab.load(files["norm"])
    for alias in _aliases(files["data"], files["dir"], "api"):
        with pytest.raises(NormlabError, match="the output is the input"):
            apply_file(norm, files["data"], alias)
    assert np.load(files["data"]).dtype == np.uint8


def test_output_inside_an_input_image_folder_is_refused(tmp_path):
    from normlab.io import refuse_overwrite

    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"png")
    with pytest.raises(NormlabError, match="input folder"):
        refuse_overwrite([folder / "a.png"], [folder])
    refuse_overwrite([folder / "stats.safetensors"], [folder])  # not read by the folder reader


def test_output_inside_an_input_parquet_folder_is_refused(tmp_path):
    """The folder reader would read a `stats.parquet` written there: the data set would change."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"a": [1.0, 2.0]}), folder / "part-0.parquet")
    result = invoke("stats", folder, "-o", folder / "stats.parquet", "-q")
    assert result.exit_code == 1 and "read from the input folder" in result.output
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]
    assert invoke("stats", folder, "-o", folder / "stats.safetensors", "-q").exit_code == 0


# ---- special files ----------------------------------------------------------------------


@pytest.fixture()
def fifo(tmp_path):
    def make(name: str):
        path = tmp_path / name
        os.mkfifo(path)
        return path

    return make


def _with_alarm(func, *args, **kwargs):
    signal.alarm(10)  # a FIFO opened for reading blocks forever: fail instead of hanging
    try:
        return func(*args, **kwargs)
    finally:
        signal.alarm(0)


@pytest.mark.parametrize("name", ["stats.safetensors", "x.npy", "x.npz", "list.txt", "x.png"])
def test_fifos_are_refused_everywhere(fifo, name, tmp_path):
    path = fifo(name)
    with pytest.raises(NormlabError, match="FIFO|not a regular"):
        _with_alarm(normlab.load if name.endswith("safetensors") else normlab.compute_stats, path)
    result = _with_alarm(invoke, "stats", path, "-o", tmp_path / "o.st", "-q")
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_fifo_as_labels_normalize_file_and_lab_data(fifo, files):
    from normlab.diagnostics import diagnose
    from normlab.lab.datasets import _load_npy
    from normlab.torch import Normalize

    labels = fifo("y.npy")
    with pytest.raises(NormlabError, match="FIFO"):
        _with_alarm(diagnose, files["data"], labels=labels)
    with pytest.raises(NormlabError, match="FIFO"):
        _with_alarm(Normalize.from_file, fifo("n.safetensors"))
    with pytest.raises(NormlabError, match="FIFO"):
        _with_alarm(_load_npy, fifo("d.npy"), "data")


def test_an_image_folder_with_a_fifo_skips_or_names_it(fifo, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "a.png")
    os.mkfifo(folder / "b.png")
    with pytest.raises(NormlabError, match="regular file"):
        _with_alarm(normlab.compute_stats, folder)
    m = _with_alarm(normlab.compute_stats, folder, skip_bad=True)
    assert m.n_samples_seen == 1


# ---- leftovers of killed writes -----------------------------------------------------------


def _killed_writer(dest) -> None:
    """A child that dies (SIGKILL) in the middle of an atomic write of ``dest``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            with atomic_write(dest) as handle:
                handle.write(b"x" * 100_000)
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)


def test_a_later_write_removes_temporaries_of_killed_writes(tmp_path):
    dest = tmp_path / "stats.safetensors"
    for _ in range(3):
        _killed_writer(dest)
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1  # each killed write already removed the one before
    other = tmp_path / "other.safetensors"
    _killed_writer(other)
    normlab.compute_stats(np.ones((3, 2))).save(dest)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0].startswith(".other.safetensors.")  # another destination's: not ours to judge
    assert names[1:] == ["stats.safetensors"]


def test_a_live_writers_temporary_is_kept(tmp_path):
    dest = tmp_path / "n.safetensors"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child writes slowly
        os.close(read_end)
        try:
            with atomic_write(dest) as handle:
                handle.write(b"first")
                handle.flush()
                os.write(write_end, b"1")
                time.sleep(1.0)
        finally:
            os._exit(0)
    os.close(write_end)
    os.read(read_end, 1)
    normlab.compute_stats(np.ones((3, 2))).save(dest)  # must not delete the child's file
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["n.safetensors"]
    assert dest.read_bytes() == b"first"  # the child's rename came last


# ---- checkpoints never mix two inputs -----------------------------------------------------


def test_a_generator_cannot_be_checkpointed_without_a_key(tmp_path):
    def batches(value: float):
        yield np.full((5, 2), value)

    ck = tmp_path / "ck"
    with pytest.raises(NormlabError, match="checkpoint_key"):
        normlab.compute_stats(batches(1.0), checkpoint=ck)
    first = normlab.compute_stats(batches(1.0), checkpoint=ck, checkpoint_key="ones")
    with pytest.raises(NormlabError, match="checkpoint_key"):
        normlab.compute_stats(batches(2.0), checkpoint=ck, checkpoint_key="twos")
    assert first.mean.tolist() == [1.0, 1.0]


def test_in_memory_arrays_are_fingerprinted_by_content(tmp_path):
    ck = tmp_path / "ck"
    a = np.zeros((20, 3))
    normlab.compute_stats(a, checkpoint=ck)
    with pytest.raises(NormlabError, match="other inputs"):
        normlab.compute_stats(a + 1, checkpoint=ck)


@pytest.mark.parametrize("mode", ["auto", "sample", "content"])
def test_a_file_rewritten_with_same_size_and_mtime_is_refused(tmp_path, mode):
    path = tmp_path / "x.npy"
    x = np.arange(60000, dtype=np.float64).reshape(20000, 3)
    np.save(path, x)
    ck = tmp_path / "ck"
    normlab.compute_stats(path, checkpoint=ck, checkpoint_fingerprint=mode, chunk_size=1000)
    stat = os.stat(path)
    y = x.copy()
    y[:, 0] = -1  # every block changes; same size
    np.save(path, y)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p / rsync -t do
    with pytest.raises(NormlabError, match="same size and modification time"):
        normlab.compute_stats(path, checkpoint=ck, checkpoint_fingerprint=mode, chunk_size=1000)


def test_checkpoint_options_are_validated(tmp_path):
    x = np.zeros((4, 2))
    with pytest.raises(NormlabError, match="checkpoint_fingerprint"):
        normlab.compute_stats(x, checkpoint=tmp_path / "a", checkpoint_fingerprint="md5")
    with pytest.raises(NormlabError, match="checkpoint_every"):
        normlab.compute_stats(x, checkpoint=tmp_path / "b", checkpoint_every="3")


def test_comoments_checkpoints_work_as_for_moments(tmp_path):
    """One runner: checkpoint_key / checkpoint_fingerprint mean the same for co-moments."""
    from normlab.comoments import compute_comoments

    def batches(value: float):
        yield np.full((5, 2), value) + np.arange(2)

    def never():
        raise AssertionError("a finished checkpoint reads nothing again")
        yield np.zeros((1, 2))

    ck = tmp_path / "ck"
    with pytest.raises(NormlabError, match="checkpoint_key"):
        compute_comoments(batches(1.0), checkpoint=ck)
    first = compute_comoments(batches(1.0), checkpoint=ck, checkpoint_key="ones")
    assert compute_comoments(never(), checkpoint=ck, checkpoint_key="ones") == first
    with pytest.raises(NormlabError, match="checkpoint_key"):
        compute_comoments(batches(2.0), checkpoint=ck, checkpoint_key="twos")
    with pytest.raises(NormlabError, match="other inputs or options"):  # moments: not the same
        normlab.compute_stats(batches(1.0), checkpoint=ck, checkpoint_key="ones")
    with pytest.raises(NormlabError, match="checkpoint_fingerprint"):
        compute_comoments(np.zeros((4, 2)), checkpoint=tmp_path / "b", checkpoint_fingerprint="x")
    path = tmp_path / "x.npy"
    np.save(path, np.arange(600.0).reshape(200, 3))
    on_file = compute_comoments(
        path, checkpoint=tmp_path / "f", checkpoint_fingerprint="content", chunk_size=10
    )
    assert on_file == compute_comoments(path)
    with pytest.raises(NormlabError, match="the output is the input"):
        compute_comoments(path, checkpoint=path)


def test_fifos_among_shards_and_parquet_files_are_refused(fifo, tmp_path):
    """Special files reached through a glob, a brace pattern, a folder or a list."""
    import io
    import tarfile

    from PIL import Image

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    png = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png, format="PNG")
    with tarfile.open(tmp_path / "s-0.tar", "w") as shard:
        member = tarfile.TarInfo("0.png")
        member.size = len(png.getvalue())
        shard.addfile(member, io.BytesIO(png.getvalue()))
    fifo("s-1.tar")
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"a": [1.0, 2.0]}), folder / "part-0.parquet")
    os.mkfifo(folder / "part-1.parquet")
    for source in (
        str(tmp_path / "s-*.tar"),
        str(tmp_path / "s-{0..1}.tar"),
        folder,
        [str(folder / "part-0.parquet"), str(folder / "part-1.parquet")],
    ):
        with pytest.raises(NormlabError, match="FIFO"):
            _with_alarm(normlab.compute_stats, source)
