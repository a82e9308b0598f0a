"""Shared test set-up: hypothesis profiles, a clean working folder, the S3 and GCS servers.

``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) runs the reliability tests' property checks with
more generated cases (over 10⁴ merge-law cases in all); the default ``dev`` profile keeps a local
run short. Tests that must stay cheap set ``max_examples`` explicitly and ignore the profile.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile("dev", max_examples=60, **_COMMON)
settings.register_profile("ci", max_examples=1200, print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    """A ``distributed.Client`` of a real 2-process Dask ``LocalCluster`` for one module."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    """``storage_options`` of a real S3-compatible server (moto, a subprocess) for one module."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from object_store import s3_server

    with s3_server() as options:
        yield options


@pytest.fixture(scope="module")
def gcs() -> Iterator[dict[str, Any]]:
    """``storage_options`` of a real GCS emulator (the JSON API, a subprocess) for one module."""
    pytest.importorskip("gcsfs")
    pytest.importorskip("gcp_storage_emulator")
    from object_store import gcs_server

    with gcs_server() as options:
        yield options


@pytest.fixture(params=["s3", "gs"])
def store(request: pytest.FixtureRequest) -> Any:
    """Each object store in turn (a :class:`object_store.Store`): S3 on moto, GCS on the
    emulator; a test that takes it reads the same data from both."""
    from object_store import Store

    options = request.getfixturevalue("s3" if request.param == "s3" else "gcs")
    return Store(request.param, options)


_ROOT = Path(__file__).resolve().parent.parent
# What a test run may leave in the project's folder (caches; the browser test's site).
_RUN_LEFTOVERS = {".pytest_cache", ".hypothesis", "__pycache__", "site"}


@pytest.fixture(scope="session", autouse=True)
def _nothing_written_to_the_project() -> Iterator[None]:
    """Fail the run if a test wrote into the project's folder (tests write under tmp_path).

    A CLI test once gave ``-o`` a nonsense value and left files named ``-5`` and ``nan`` there,
    which were then committed.
    """
    before = set(os.listdir(_ROOT))
    yield
    new = set(os.listdir(_ROOT)) - before - _RUN_LEFTOVERS
    assert not new, f"tests wrote into the project's folder: {sorted(new)} (use tmp_path)"
