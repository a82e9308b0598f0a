"""The scheme registry: a scheme defined and registered in one place is seen everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import normlab
from normlab import io, schemes
from normlab.cli import app
from normlab.moments import Moments
from normlab.normalizers import AffineNormalizer

NEW = "halve-range"


class HalveRange(AffineNormalizer):
    """A new scheme, defined here only: centre on the midrange, divide by half the range."""

    scheme = NEW

    def __init__(self, *, dtype: Any = None) -> None:
        super().__init__(dtype=dtype)

    def _compute(self, stats: Moments) -> None:
        low, high = stats.min, stats.max
        self._set_affine((low + high) / 2, np.where(high > low, (high - low) / 2, 1.0))


@pytest.fixture
def new_scheme() -> Iterator[str]:
    io.register(HalveRange)
    schemes.register(
        NEW,
        HalveRange,
        "map each feature's [min, max] onto [-1, 1]",
        in_default_set=True,
        measured_by_default=True,
    )
    try:
        yield NEW
    finally:
        schemes.unregister(NEW)
        io.unregister(HalveRange)


def test_a_scheme_registered_in_one_place_is_seen_everywhere(new_scheme, tmp_path):
    x = np.random.default_rng(0).integers(0, 200, (60, 5), dtype=np.uint8)
    x[:, 0] = 7  # a constant feature
    np.save(tmp_path / "x.npy", x)
    # the listings
    assert new_scheme in schemes.names() and new_scheme in schemes.describe()
    assert new_scheme in schemes.where(in_default_set=True)
    assert new_scheme in schemes.where(measured_by_default=True)
    assert schemes.entry(new_scheme).options == ("dtype",)
    runner = CliRunner()
    listing = runner.invoke(app, ["schemes"])
    assert listing.exit_code == 0 and new_scheme in listing.stdout
    # the command line: fit from data and from a stats file
    out = tmp_path / "new.safetensors"
    fit = runner.invoke(
        app, ["fit", str(tmp_path / "x.npy"), "--scheme", new_scheme, "-o", str(out)]
    )
    assert fit.exit_code == 0, fit.output
    fitted = normlab.load(out)
    assert isinstance(fitted, HalveRange)
    y = fitted.transform(x)
    assert y[:, 1:].min() == -1.0 and y[:, 1:].max() == 1.0
    stats = tmp_path / "stats.safetensors"
    assert runner.invoke(app, ["stats", str(tmp_path / "x.npy"), "-o", str(stats)]).exit_code == 0
    from_stats = runner.invoke(
        app, ["fit", "--stats", str(stats), "--scheme", new_scheme, "-o", str(out)]
    )
    assert from_stats.exit_code == 0, from_stats.output
    # the Python entry points, the diagnostics and the demo's table
    assert isinstance(schemes.get(new_scheme), HalveRange)
    assert isinstance(schemes.fit_stats(new_scheme, Moments().update(x)), HalveRange)
    from normlab.diagnostics import diagnose

    report = diagnose(x)
    assert new_scheme in report["spectrum"] and new_scheme in report["predictions"]["schemes"]
    from normlab.commands.demo import scheme_rows

    assert new_scheme in [row["scheme"] for row in scheme_rows(x)]
    diagnose = runner.invoke(app, ["diagnose", str(tmp_path / "x.npy"), "--json", "-q"])
    assert diagnose.exit_code == 0, diagnose.output
    assert new_scheme in diagnose.stdout


def test_unregister_takes_the_scheme_out_everywhere(new_scheme):
    schemes.unregister(new_scheme)
    try:
        assert new_scheme not in schemes.names()
        with pytest.raises(normlab.NormlabError, match="unknown scheme"):
            schemes.get(new_scheme)
        result = CliRunner().invoke(app, ["fit", "--stats", "s", "--scheme", new_scheme])
        assert result.exit_code == 1 and "unknown scheme" in result.output
    finally:  # the fixture unregisters it again
        schemes.register(NEW, HalveRange, "again")


def test_roles_come_from_the_registry():
    assert schemes.where(reference=True) == ["raw", "max"]
    assert schemes.where(baseline=True) == ["raw"]
    assert schemes.where(default=True) == ["feature"]
    with pytest.raises(normlab.NormlabError, match="no field"):
        schemes.where(famous=True)
