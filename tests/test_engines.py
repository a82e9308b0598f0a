"""Engines: serial, a local process pool and Dask give the same bits; errors name the task;
Dask workers that die are replaced and their tasks rerun; bad schedulers and versions are
refused."""

from __future__ import annotations

import io
import math
import os
import signal
import socket
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import normlab
from normlab.engines import run_tasks
from normlab.errors import NonFiniteError, NormlabError, SourceError
from normlab.moments import Moments
from normlab.progress import progress_bar
from normlab.sources import resolve

sys.path.insert(0, str(Path(__file__).parent))  # workers import engine_tasks by name
from engine_tasks import ProcessExit, executed, slow_source  # noqa: E402

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster(dask_client):
    """The real 2-process ``LocalCluster`` of conftest's ``dask_client``."""
    return dask_client


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("engines")
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (600, 6, 5, 3), dtype=np.uint8)
    images[:, 0, 0, :] = 9  # a constant pixel
    floats = rng.normal(1e3, 1e-3, (700, 11)) * rng.choice([1.0, 1e6], (1, 11))
    np.save(folder / "images.npy", images)
    np.save(folder / "floats.npy", floats)
    return folder, images, floats


def fraction_mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance per feature, rounded once from exact rationals."""
    flat = x.reshape(len(x), -1).astype(object)
    n = len(x)
    means, variances = [], []
    for column in flat.T:
        mean = Fraction(int(sum(column)), n)
        means.append(float(mean))
        variances.append(float(sum((Fraction(int(v)) - mean) ** 2 for v in column) / n))
    return np.array(means).reshape(x.shape[1:]), np.array(variances).reshape(x.shape[1:])


def test_integer_data_same_bits_on_every_engine_and_exact(data, cluster):
    folder, images, _ = data
    path = str(folder / "images.npy")
    serial = normlab.compute_stats(path, chunk_size=40)
    assert len(resolve(path, chunk_size=40).tasks) > 1
    for result in (
        normlab.compute_stats(path, chunk_size=40, engine="local", workers=1),
        normlab.compute_stats(path, chunk_size=40, engine="local", workers=3),
        normlab.compute_stats(path, chunk_size=40, engine="dask", scheduler=cluster),
        normlab.compute_stats(
            path, chunk_size=40, engine="dask", scheduler=cluster.scheduler.address
        ),
    ):
        assert result == serial
    mean, var = fraction_mean_var(images)
    assert np.array_equal(serial.mean, mean)
    assert np.array_equal(serial.var(), var)


def test_float_data_same_bits_because_merges_follow_task_order(data, cluster):
    folder, _, floats = data
    path = str(folder / "floats.npy")
    serial = normlab.compute_stats(path, chunk_size=13)
    others = [
        normlab.compute_stats(path, chunk_size=13, engine="local", workers=2),
        normlab.compute_stats(path, chunk_size=13, engine="local", workers=3),
        normlab.compute_stats(path, chunk_size=13, engine="dask", scheduler=cluster),
        normlab.compute_stats(
            path, chunk_size=13, engine="dask", workers=2
        ),  # its own LocalCluster
    ]
    for result in others:
        assert result == serial
        assert np.array_equal(result.var(), serial.var())  # bits, not closeness
    fsum_mean = np.array([math.fsum(column) / len(column) for column in floats.T])
    np.testing.assert_allclose(serial.mean, fsum_mean, rtol=1e-14)
    np.testing.assert_allclose(serial.var(), floats.var(axis=0), rtol=1e-9)


def test_histograms_and_comoments_ride_along(data, cluster):
    folder, images, _ = data
    path = str(folder / "images.npy")
    serial = normlab.compute_stats(path, "channel", chunk_size=50, percentiles=(1, 50, 99))
    local = normlab.compute_stats(
        path, "channel", chunk_size=50, percentiles=(1, 50, 99), engine="local", workers=2
    )
    assert local == serial
    np.testing.assert_array_equal(
        local.percentile(50),
        np.percentile(images.reshape(-1, 3), 50, axis=0, method="inverted_cdf"),
    )
    comoments = pytest.importorskip("normlab.comoments")
    flat = str(folder / "flat.npy")
    np.save(flat, images.reshape(len(images), -1)[:, :12])
    assert comoments.compute_comoments(flat, chunk_size=60, engine="local", workers=2) == (
        comoments.compute_comoments(flat, chunk_size=60)
    )


def test_worker_error_names_the_file_and_rows(data, cluster, tmp_path):
    _, _, floats = data
    bad = floats.copy()
    bad[650, 3] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, bad)
    for options in ({"engine": "local", "workers": 2}, {"engine": "dask", "scheduler": cluster}):
        with pytest.raises(NonFiniteError, match=rf"{path} rows \d+:700"):
            normlab.compute_stats(str(path), chunk_size=50, **options)


def test_nonfinite_values_are_counted_over_the_whole_input_by_every_engine(cluster, tmp_path):
    """Tasks after the first bad one are counted too; the row is the input's, the file named."""
    from normlab import kernels

    clean = np.zeros((700, 4))
    second, third = clean.copy(), clean.copy()
    second[650, 3] = np.nan  # row 1350 of the input
    second[690:695, 1] = np.inf
    third[[5, 50, 500], 0] = -np.inf
    paths = []
    for name, values in (("a", clean), ("b", second), ("c", third)):
        paths.append(str(tmp_path / f"{name}.npy"))
        np.save(paths[-1], values)
    messages = {}
    for name, options in (
        ("serial", {}),
        ("local", {"engine": "local", "workers": 2}),
        ("dask", {"engine": "dask", "scheduler": cluster}),
        ("threads", {}),
    ):
        before = kernels.get_threads()
        kernels.set_threads(2 if name == "threads" else before)
        try:
            with pytest.raises(NonFiniteError) as caught:
                normlab.compute_stats(paths, chunk_size=100, **options)
        finally:
            kernels.set_threads(before)
        messages[name] = str(caught.value)
    assert len(set(messages.values())) == 1, messages
    message = messages["serial"]
    assert message.startswith("9 non-finite value(s) (NaN/inf) in the input (2100 rows read)")
    assert f"first in row 1350 of the input ({paths[1]} rows " in message
    assert "row 650 there) at index (3,)" in message


def test_unreadable_file_in_a_worker_is_a_source_error(data, tmp_path):
    folder, images, _ = data
    path = tmp_path / "gone.npy"
    np.save(path, images)
    src = resolve(str(path), chunk_size=100)
    path.unlink()
    with pytest.raises(SourceError, match="gone.npy rows 0:"):
        run_tasks(src.tasks, Moments, engine="local", workers=2)


def test_bad_engine_arguments():
    x = np.zeros((4, 2), np.uint8)
    with pytest.raises(NormlabError, match="unknown engine 'gpu'"):
        normlab.compute_stats(x, engine="gpu")
    with pytest.raises(NormlabError, match="workers must be a positive"):
        normlab.compute_stats(x, engine="local", workers=0)
    with pytest.raises(NormlabError, match="serial engine takes no workers"):
        normlab.compute_stats(x, workers=4)
    with pytest.raises(NormlabError, match="scheduler must be an address"):
        normlab.compute_stats(x, engine="dask", scheduler=8786)


def test_silent_scheduler_times_out_with_a_clear_message():
    import dask

    with socket.socket() as s:  # a free port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(
            NormlabError, match=rf"no Dask scheduler answered at tcp://127.0.0.1:{port} within 1s"
        ):
            normlab.compute_stats(
                np.zeros((4, 2), np.uint8), engine="dask", scheduler=f"tcp://127.0.0.1:{port}"
            )
    assert time.monotonic() - start < 30  # refused, not hung


def test_workers_with_another_normlab_version_are_refused(cluster):
    version = normlab.__version__
    cluster.run(lambda: setattr(__import__("normlab"), "__version__", "0.0.0-other"))
    try:
        with pytest.raises(
            NormlabError,
            match=rf"another normlab version than this process \({version}\).*0\.0\.0-other",
        ):
            normlab.compute_stats(np.zeros((4, 2), np.uint8), engine="dask", scheduler=cluster)
    finally:
        cluster.run(lambda: setattr(__import__("normlab"), "__version__", version))


def test_killed_dask_worker_tasks_rerun_same_bits(data, cluster, tmp_path):
    folder, _, _ = data
    path = str(folder / "images.npy")
    marker = str(tmp_path / "ran.txt")
    n_tasks = 12
    expected = normlab.compute_stats(path)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            src = slow_source(path, n_tasks, delay=0.4, marker=marker)
            outcome["stats"] = normlab.compute_stats(src, engine="dask", scheduler=cluster)
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while len(executed(marker)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = cluster.run(os.getpid)
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)
    thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["stats"] == expected
    runs = executed(marker)
    assert set(runs) == {f"{t.start}:{t.stop}" for t in slow_source(path, n_tasks, delay=0).tasks}
    assert len(runs) > n_tasks  # the killed worker's task ran again elsewhere
    cluster.wait_for_workers(2, timeout=60)


def test_cli_engines(data, tmp_path, cluster):
    from normlab.cli import app

    folder, _, _ = data
    path = str(folder / "images.npy")
    runner = CliRunner()
    outputs = []
    for i, options in enumerate(
        (
            ["--engine", "local", "--workers", "2"],
            ["--engine", "dask", "--scheduler", cluster.scheduler.address],
        )
    ):
        out = tmp_path / f"s{i}.safetensors"
        result = runner.invoke(app, ["stats", path, "-o", str(out), "-q", *options])
        assert result.exit_code == 0, result.output
        outputs.append(normlab.load(out))
    assert outputs[0] == outputs[1] == normlab.compute_stats(path)


def test_progress_bar_shows_items_and_megabytes_per_second():
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=150)
    with progress_bar(100, "statistics", enabled=True, console=console) as advance:
        advance(50, 5_000_000)
        time.sleep(0.1)
        advance(50, 5_000_000)
    text = buffer.getvalue()
    assert "items/s" in text and "MB/s" in text
    silent = io.StringIO()
    with progress_bar(10, "x", enabled=False, console=Console(file=silent)) as advance:
        advance(10, 10)
    assert silent.getvalue() == ""


def test_sources_that_cannot_travel_are_refused_in_words():
    batches = (np.zeros((3, 2)) for _ in range(2))
    with pytest.raises(
        NormlabError,
        match=r"engine 'local' runs tasks in other processes.*IterableTask.*engine='serial'",
    ):
        normlab.compute_stats(batches, engine="local", workers=2)


def test_image_folder_on_workers_and_a_corrupt_file_named(tmp_path, cluster):
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(5)
    for i in range(6):
        image_module.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    serial = normlab.compute_stats(str(tmp_path), "channel")
    assert normlab.compute_stats(str(tmp_path), "channel", engine="local", workers=2) == serial
    assert (
        normlab.compute_stats(str(tmp_path), "channel", engine="dask", scheduler=cluster) == serial
    )
    (tmp_path / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    for options in ({"engine": "local", "workers": 2}, {"engine": "dask", "scheduler": cluster}):
        with pytest.raises(SourceError, match=r"9\.png"):
            normlab.compute_stats(str(tmp_path), "channel", **options)


def test_scheduler_without_workers_is_refused():
    import dask

    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        distributed.LocalCluster(
            n_workers=0, processes=True, host="127.0.0.1", dashboard_address=":0"
        ) as empty,
    ):
        with pytest.raises(NormlabError, match="has no workers .waited 1s"):
            normlab.compute_stats(
                np.zeros((4, 2), np.uint8), engine="dask", scheduler=empty.scheduler_address
            )


def test_local_worker_that_dies_is_named_and_the_next_run_gets_a_new_pool(data):
    from normlab.sources import Source

    folder, _, _ = data
    with pytest.raises(
        NormlabError, match="a worker process died while running a task that ends its process"
    ):
        normlab.compute_stats(Source([ProcessExit()], "dying"), engine="local", workers=2)
    path = str(folder / "images.npy")
    assert normlab.compute_stats(
        path, chunk_size=100, engine="local", workers=2
    ) == normlab.compute_stats(path)
