"""Write the committed format-version-1 fixtures (run once; the files must never change).

    python tests/data/make_fixtures.py

``tests/test_fuzz_files.py`` checks that every later normlab still loads them with the same
numbers: the files are the compatibility promise for format version 1.
"""

from __future__ import annotations

import json
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np

import normlab

HERE = Path(__file__).parent


def exact(column) -> tuple[float, float]:
    vals = [Fraction(v) for v in column]
    mean = sum(vals, Fraction(0)) / len(vals)
    return float(mean), float(sum((v - mean) ** 2 for v in vals) / len(vals))


def main() -> None:
    rng = np.random.default_rng(2024)
    images = rng.integers(0, 256, (16, 2, 2, 3), dtype=np.uint8)
    floats = np.round(rng.standard_normal((12, 3)) * 100, 3)
    expected = {}
    m_int = normlab.Moments.from_array(images)
    m_float = normlab.Moments.from_array(floats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", normlab.NormlabWarning)
        zscore = normlab.ZScore(axis="channel").fit(images)
    for name, obj, data in [
        ("moments_v1_uint8.safetensors", m_int, images),
        ("moments_v1_float.safetensors", m_float, floats),
        ("zscore_v1.safetensors", zscore, None),
    ]:
        obj.save(str(HERE / name))
        stats = obj if isinstance(obj, normlab.Moments) else obj.stats_
        entry = {
            "mean": stats.mean.tolist(),
            "var": stats.var().tolist(),
            "n_samples_seen": stats.n_samples_seen,
        }
        if data is not None and data.dtype.kind == "u":  # integer data: the Fraction reference
            pairs = [exact([int(v) for v in col]) for col in data.reshape(len(data), -1).T]
            assert stats.mean.ravel().tolist() == [p[0] for p in pairs]
            assert stats.var().ravel().tolist() == [p[1] for p in pairs]
        if name.startswith("zscore"):
            probe = images[:2].astype(np.float64)
            entry["probe"] = probe.tolist()
            entry["transformed"] = obj.transform(probe).tolist()
        expected[name] = entry
    (HERE / "expected_v1.json").write_text(json.dumps(expected, indent=1) + "\n")


if __name__ == "__main__":
    main()
