"""Shared test set-up: hypothesis profiles.

``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) runs the reliability tests' property checks with
more generated cases (over 10⁴ merge-law cases in all); the default ``dev`` profile keeps a local
run short. Tests that must stay cheap set ``max_examples`` explicitly and ignore the profile.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
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
def s3() -> Iterator[dict[str, Any]]:
    """``storage_options`` of a real S3-compatible server (moto, a subprocess) for one module."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from object_store import s3_server

    with s3_server() as options:
        yield options
