"""Every source of an optional extra says which extra to install when its package is missing
(``pip install 'normlab[x]'``), naming the place it was reading. A missing package is simulated
in a fresh interpreter with ``sys.modules[name] = None`` (what makes ``import name`` fail)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")


def run_without(modules: list[str], code: str) -> str:
    """The last line of what ``code`` prints to stderr with ``modules`` missing."""
    blocked = "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{blocked}import normlab\n{code}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode != 0, done.stdout
    return done.stderr.strip().splitlines()[-1]


def png() -> bytes:
    ok, data = cv2.imencode(".png", np.zeros((3, 4, 3), np.uint8))
    assert ok
    return data.tobytes()


def test_zarr(tmp_path):
    (tmp_path / "volume.zarr").mkdir()
    last = run_without(["zarr"], f"normlab.compute_stats({str(tmp_path / 'volume.zarr')!r})")
    assert last.startswith("normlab.errors.MissingExtraError") and "normlab[zarr]" in last


def test_hdf5(tmp_path):
    (tmp_path / "scan.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    last = run_without(["h5py"], f"normlab.compute_stats({str(tmp_path / 'scan.h5')!r})")
    assert last.startswith("normlab.errors.MissingExtraError") and "normlab[hdf5]" in last


def test_webdataset_without_image_decoders(tmp_path):
    data = png()
    with tarfile.open(tmp_path / "shard-0.tar", "w") as tar:
        info = tarfile.TarInfo("0001.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    shard = str(tmp_path / "shard-0.tar")
    last = run_without(["cv2", "PIL", "simplejpeg"], f"normlab.compute_stats({shard!r})")
    assert last.startswith("normlab.errors.MissingExtraError")
    assert "normlab[webdataset]" in last and "shard-0.tar[0001.png]" in last


def test_hf_without_datasets_or_image_decoders(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image()})
    rows = {"image": [{"bytes": png(), "path": None}] * 2}
    folder = str(tmp_path / "saved")
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(folder)
    last = run_without(["datasets"], f"normlab.compute_stats({folder!r})")
    assert last.startswith("normlab.errors.MissingExtraError") and "normlab[hf]" in last
    last = run_without(["cv2", "PIL", "simplejpeg"], f"normlab.compute_stats({folder!r})")
    assert last.startswith("normlab.errors.MissingExtraError")
    assert "normlab[hf]" in last and "saved[0]['image']" in last
