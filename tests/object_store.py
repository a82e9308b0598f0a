"""A real S3-compatible HTTP server for tests: moto's server mode in a subprocess.

``s3_server()`` starts ``python -m moto.server`` on a free port of 127.0.0.1 and yields the
``storage_options`` that point s3fs at it (fake credentials, the server as endpoint). Tests
use it through the ``s3`` fixture of the test modules that import it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def s3_server(*, auth: bool = False) -> Iterator[dict[str, Any]]:
    """A moto S3 server; ``auth=True`` enforces credentials (so every fake key is denied)."""
    port = free_port()
    env = dict(os.environ)
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.1)
        yield {
            "key": "testing",
            "secret": "testing",
            "endpoint_url": f"http://127.0.0.1:{port}",
            # a fresh filesystem per test: s3fs caches listings across instances otherwise
            "skip_instance_cache": True,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)
