"""Real object-store HTTP servers for tests, each in a subprocess on a free port of 127.0.0.1.

``s3_server()`` starts ``python -m moto.server`` (S3) and yields the ``storage_options`` that
point s3fs at it (fake credentials, the server as endpoint); ``gcs_server()`` starts
``python -m gcp_storage_emulator`` (the GCS JSON API, in memory) and yields gcsfs's options
(``endpoint_url``, ``token="anon"``). Tests use them through the ``s3``, ``gcs`` and ``store``
fixtures of tests/conftest.py; :class:`Store` writes test data into either.
"""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


@contextmanager
def gcs_server() -> Iterator[dict[str, Any]]:
    """A GCS emulator (the JSON API over plain HTTP, objects in memory).

    Raises RuntimeError with the emulator's own output if it exits or does not answer within
    60 s, so a broken install fails the test instead of hanging it.
    """
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gcp_storage_emulator", "start"]
            + ["--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for(port, process, path="/storage/v1/b", log=log)
            yield {
                "endpoint_url": f"http://127.0.0.1:{port}",
                "token": "anon",
                "project": "normlab-test",
                "skip_instance_cache": True,
            }
        finally:
            process.terminate()
            process.wait(timeout=30)


@dataclass(frozen=True)
class Store:
    """One object store of the tests: its protocol and the ``storage_options`` for it."""

    protocol: str  # "s3" or "gs"
    options: dict[str, Any]

    def url(self, path: str) -> str:
        return f"{self.protocol}://{path}"

    def filesystem(self) -> Any:
        """A filesystem to write test data with (``mkdir("bucket")`` creates a bucket)."""
        if self.protocol == "s3":
            import s3fs

            return s3fs.S3FileSystem(**self.options)
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(**self.options)


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


def _wait_for(
    port: int, process: subprocess.Popen[bytes], *, path: str = "", log: Any = None
) -> None:
    """Until the server accepts connections (and answers ``GET path`` when one is given)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            if path:
                try:
                    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                    direct.open(f"http://127.0.0.1:{port}{path}", timeout=5).close()
                except urllib.error.HTTPError:
                    pass  # an HTTP answer, even an error, is a server that answers
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                said = ""
                if log is not None:
                    log.seek(0)
                    said = log.read()[-2000:].decode(errors="replace")
                raise RuntimeError(
                    f"the test server {process.args[:4]} did not start"
                    + (f"; it said:\n{said}" if said else "")
                ) from None
            time.sleep(0.1)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    os.chdir(sys.argv[3])
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), RangeHandler).serve_forever()
