"""A real S3-compatible HTTP server for tests: moto's server mode in a subprocess.

``s3_server()`` starts ``python -m moto.server`` on a free port of 127.0.0.1 and yields the
``storage_options`` that point s3fs at it (fake credentials, the server as endpoint). Tests
use it through the ``s3`` fixture of the test modules that import it.
"""

from __future__ import annotations

import http.server
import os
import re
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
        _wait_for(port, process)
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


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Python's file server plus ``Range: bytes=a-b`` (what object stores and CDNs answer)."""

    def send_head(self):  # type: ignore[no-untyped-def]
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if match is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match.group(1))
        stop = min(int(match.group(2) or size - 1), size - 1)
        handle = open(path, "rb")  # noqa: SIM115 - closed by copyfile's caller
        handle.seek(start)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{stop}/{size}")
        self.send_header("Content-Length", str(stop - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.range_left = stop - start + 1
        return handle

    def copyfile(self, source, outputfile):  # type: ignore[no-untyped-def]
        left = getattr(self, "range_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(left))


@contextmanager
def http_server(folder: str) -> Iterator[str]:
    """A file server with range requests for ``folder`` in a subprocess; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "serve", str(port), folder],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start") from None
            time.sleep(0.1)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    os.chdir(sys.argv[3])
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), RangeHandler).serve_forever()
