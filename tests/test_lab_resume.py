"""A lab that survives interruption: interleaved schemes, --resume, plan and run lines, own data."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from typer.testing import CliRunner  # noqa: E402

from normlab.cli import app  # noqa: E402
from normlab.errors import NormlabError, SourceError  # noqa: E402
from normlab.lab import compare, load_dataset  # noqa: E402

torch.set_num_threads(1)
OPTIONS = dict(
    schemes=("raw", "center", "global"),
    model="linear",
    seeds=2,
    epochs=1,
    n_samples=300,
    lr_min=1 / 4,
    lr_max=1.0,
    lr_factor=2.0,
    progress=False,
    report=False,
)


class Stop:
    def __init__(self, after: int) -> None:
        self.after, self.lines = after, []

    def __call__(self, text: str) -> None:
        self.lines.append(text)
        if sum(t.startswith("run ") for t in self.lines) >= self.after:
            raise KeyboardInterrupt


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    whole = compare("digits", out=tmp_path / "whole", **OPTIONS)
    stop = Stop(after=5)
    with pytest.raises(KeyboardInterrupt):
        compare("digits", out=tmp_path / "part", log=stop, **OPTIONS)
    stopped = json.loads((tmp_path / "part" / "results.json").read_text())
    assert not stopped["complete"] and len(stopped["runs"]) == 5
    # interleaved: the first grid point was trained for every scheme before the next one
    assert [r["scheme"] for r in stopped["runs"]] == ["raw", "raw", "center", "center", "global"]
    lines: list[str] = []
    compare("digits", out=tmp_path / "part", resume=True, log=lines.append, **OPTIONS)
    assert (tmp_path / "part" / "results.json").read_bytes() == (
        tmp_path / "whole" / "results.json"
    ).read_bytes()
    assert whole["complete"]
    assert lines[0].startswith("plan: 3 scheme(s) × 3 learning rates × 2 seed(s) = 18 runs")
    assert "5 already finished" in lines[0]
    assert sum("(from the stopped run)" in line for line in lines) == 5


def test_resume_refuses_changed_options(tmp_path):
    stop = Stop(after=1)
    with pytest.raises(KeyboardInterrupt):
        compare("digits", out=tmp_path / "o", log=stop, **OPTIONS)
    changed = {**OPTIONS, "seeds": 3}
    with pytest.raises(NormlabError, match=r"options differ .*seeds: 2 then, 3 now"):
        compare("digits", out=tmp_path / "o", resume=True, **changed)
    with pytest.raises(NormlabError, match="needs the folder of a stopped run"):
        compare("digits", out=tmp_path / "none", resume=True, **OPTIONS)


def test_npz_and_image_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 6, 5), dtype=np.uint8)
    y = np.repeat([3, 8], 20)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(data=tmp_path / "d.npz")
    assert ds.sample_shape == (6, 5) and ds.n_classes == 2 and ds.x_train.dtype == np.uint8
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(SourceError, match="arrays named x and y; it holds images"):
        load_dataset(data=tmp_path / "bad.npz")
    for label in ("cat", "dog"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
    for i in range(20):
        for label, base in (("cat", 10), ("dog", 200)):
            pixels = np.full((6, 5), base + i, dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / label / f"{i}.png")
    ds = load_dataset(data=tmp_path / "imgs")
    assert ds.sample_shape == (6, 5) and ds.n_classes == 2
    both = np.concatenate([ds.x_train, ds.x_test])
    labels = np.concatenate([ds.y_train, ds.y_test])
    assert np.all(both[labels == 0] < 50) and np.all(both[labels == 1] >= 200)
    assert "classes: cat, dog" in ds.description


def test_cli_prints_plan_and_a_line_per_run_off_a_terminal(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        x=np.random.default_rng(0).random((60, 3)),
        y=np.repeat([0, 1], 30),
    )
    args = [
        "compare",
        "--data",
        str(tmp_path / "d.npz"),
        "--model",
        "lsq",
        "--schemes",
        "center,feature",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--lr-min",
        "0.5",
        "--lr-max",
        "1",
        "--out",
        str(tmp_path / "o"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "plan: 2 scheme(s) × 2 learning rates × 1 seed(s) = 4 runs" in result.output
    assert "run 1: center lr" in result.output and "run 2: feature lr" in result.output
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert "(from the stopped run)" in again.output
