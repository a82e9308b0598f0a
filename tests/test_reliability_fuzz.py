"""Structure-aware fuzzing in a subprocess under a 1 GiB address-space cap and a timeout.

Valid files are taken apart and their *declared* values changed — image widths and heights
(PNG IHDR, JPEG SOF, BMP and GIF headers, TIFF tags), ``.npy`` shapes and dtypes (alone and
inside ``.npz``), statistics metadata and tensor shapes — then every file is read by one child
process whose ``RLIMIT_AS`` is 1 GiB, each case under a 10 s alarm. A case passes when it
ends in success or a ``NormlabError``; a raw exception, a crash, running out of the cap or
the time fails. ``FUZZ_CASES`` (default 60) sets the number of cases per kind.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import normlab

CASES = int(os.environ.get("FUZZ_CASES", "60"))
CAP = 1 << 30

CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys, traceback
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    import numpy as np
    import normlab
    from normlab.errors import NormlabError

    def alarm(*_):
        raise TimeoutError("case took more than 10 s")

    signal.signal(signal.SIGALRM, alarm)
    out = {{}}
    for line in sys.stdin:
        path = line.strip()
        signal.alarm(10)
        try:
            if path.endswith(".safetensors"):
                obj = normlab.load(path)
                if hasattr(obj, "summary"):
                    obj.summary()
            else:
                normlab.compute_stats(path, skip_bad=False)
            out[path] = "ok"
        except NormlabError:
            out[path] = "normlab"
        except BaseException as exc:
            out[path] = "raw " + type(exc).__name__ + ": " + str(exc)[:200]
        finally:
            signal.alarm(0)
    print(json.dumps(out))
    """
)


def _image_bytes(fmt: str) -> bytes:
    Image = pytest.importorskip("PIL.Image")
    buf = io.BytesIO()
    arr = np.random.default_rng(0).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def _mutate_image(data: bytes, fmt: str, rng: random.Random) -> bytes:
    out = bytearray(data)
    big = rng.choice([0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**32 - 1, rng.randrange(2**32)])
    if fmt == "PNG":
        field = rng.choice([16, 20])
        out[field : field + 4] = (big % 2**32).to_bytes(4, "big")
        if rng.random() < 0.3:
            out[24] = rng.choice([1, 2, 4, 8, 16, 3])  # bit depth
            out[25] = rng.choice([0, 2, 3, 4, 6, 7])  # colour type
    elif fmt == "JPEG":
        sof = out.find(b"\xff\xc0")
        field = sof + rng.choice([5, 7])
        out[field : field + 2] = (big % 2**16).to_bytes(2, "big")
        if rng.random() < 0.3:
            out[sof + 9] = rng.choice([0, 1, 3, 4, 255])  # components
    elif fmt == "BMP":
        field = rng.choice([18, 22])
        out[field : field + 4] = struct.pack("<i", big % 2**31 * rng.choice([1, -1]))
        if rng.random() < 0.3:
            out[28:30] = struct.pack("<H", rng.choice([1, 4, 8, 16, 24, 32, 64]))
    elif fmt == "GIF":
        field = rng.choice([6, 8])
        out[field : field + 2] = (big % 2**16).to_bytes(2, "little")
    elif fmt == "TIFF":
        for tag in (256, 257, 258, 277):  # width, height, bits, samples per pixel
            spot = out.find(struct.pack("<H", tag))
            if spot > 0 and rng.random() < 0.5:
                out[spot + 8 : spot + 12] = struct.pack("<I", big % 2**32)
    return bytes(out)


def _npy(shape: str, descr: str, body: bytes) -> bytes:
    header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - len(header) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + body


def _mutate_npy(rng: random.Random) -> bytes:
    body = np.arange(48, dtype=np.float32).tobytes()
    dims = [rng.choice([0, 1, 3, 4, 2**31, 2**40, 2**62, -1]) for _ in range(rng.randint(1, 4))]
    shape = "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"
    descr = rng.choice(["<f4", "<f8", "|u1", "<i8", "|b1", "<f2", ">f4", "<c8", "<U3", "|V8"])
    return _npy(shape, descr, body[: rng.randrange(len(body) + 1)])


def _mutate_stats(path: Path, rng: random.Random) -> bytes:
    from safetensors.numpy import save

    from normlab.io import read_file

    meta, tensors = read_file(path)
    name = rng.choice(sorted(tensors))
    choice = rng.random()
    if choice < 0.4:  # another shape, same or larger declared size
        shape = tuple(rng.choice([0, 1, 2, 3, 7, 1000]) for _ in range(rng.randint(0, 3)))
        tensors[name] = np.zeros(shape, tensors[name].dtype)
    elif choice < 0.7:  # another dtype
        tensors[name] = tensors[name].astype(rng.choice([np.float32, np.int32, np.uint8]))
    else:  # a metadata value replaced
        key = rng.choice(sorted(meta))
        meta[key] = rng.choice([None, -1, 2**70, "x", [], {}, [1, 2], 1e308, True])
    return save(tensors, metadata={"normlab": json.dumps(meta)})


def _run_child(paths: list[Path]) -> dict[str, str]:
    src = str(Path(normlab.__file__).parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(cap=CAP)],
        input="\n".join(str(p) for p in paths),
        capture_output=True,
        text=True,
        timeout=60 + 10 * len(paths),
        env={**os.environ, "PYTHONPATH": src},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "BMP", "GIF", "TIFF", "npy", "npz", "stats"])
def test_structure_aware_fuzz_under_a_memory_cap(tmp_path, kind):
    rng = random.Random(f"reliab-{kind}")
    paths = []
    if kind == "stats":
        valid = tmp_path / "valid.safetensors"
        x = np.random.default_rng(0).integers(0, 256, (30, 4, 3), dtype=np.uint8)
        normlab.compute_stats(x, "channel", histogram=True).save(valid)
    else:
        valid = None
    for i in range(CASES):
        if kind in ("PNG", "JPEG", "BMP", "GIF", "TIFF"):
            path = tmp_path / f"{i}.{kind.lower()}"
            path.write_bytes(_mutate_image(_image_bytes(kind), kind, rng))
        elif kind == "npy":
            path = tmp_path / f"{i}.npy"
            path.write_bytes(_mutate_npy(rng))
        elif kind == "npz":
            import zipfile

            path = tmp_path / f"{i}.npz"
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("x.npy", _mutate_npy(rng))
        else:
            assert valid is not None
            path = tmp_path / f"{i}.safetensors"
            path.write_bytes(_mutate_stats(valid, rng))
        paths.append(path)
    outcomes = _run_child(paths)
    raw = {p: o for p, o in outcomes.items() if o.startswith("raw")}
    assert not raw, list(raw.items())[:5]
    assert len(outcomes) == CASES
