#!/usr/bin/env bash
# Smoke test of an installed (non-editable) normlab: run from outside the source tree.
set -euo pipefail
ENV="$1"
PY="$ENV/bin/python"
"$ENV/bin/normlab" --version
"$PY" - <<'PY'
import numpy as np
np.save("smoke.npy", np.arange(24, dtype=np.uint8).reshape(6, 4))
PY
"$ENV/bin/normlab" stats smoke.npy -o smoke.safetensors
"$PY" - <<'PY'
import importlib
import importlib.metadata as md
import sys
from pathlib import Path

from packaging.requirements import Requirement

import normlab

# The installed wheel, not the editable source tree, answers `import normlab`.
assert Path(normlab.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), normlab.__file__
dist = md.distribution("normlab")
assert Path(str(dist.locate_file(""))).resolve().is_relative_to(Path(sys.prefix).resolve())
extras = dist.metadata.get_all("Provides-Extra") or []
assert "all" in extras, extras
requirements = [Requirement(line) for line in dist.requires or []]


def wanted(req, extras):
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras or [""])


# [all] names other extras (normlab[images,torch,...]): follow them to a fixed point.
chosen = {"all"}
while True:
    more = {
        extra
        for req in requirements
        if req.name == "normlab" and wanted(req, chosen)
        for extra in req.extras
    }
    if more <= chosen:
        break
    chosen |= more
unmet, checked = [], 0
for req in requirements:
    if req.name == "normlab" or not wanted(req, chosen):
        continue
    checked += 1
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        unmet.append(f"{req} (not installed)")
        continue
    if not req.specifier.contains(version, prereleases=True):
        unmet.append(f"{req} (found {version})")
assert not unmet, "the wheel's requirements are not met: " + "; ".join(unmet)
for module in ("normlab.sklearn", "normlab.torch", "normlab.export", "normlab.engines.dask"):
    importlib.import_module(module)
print("wheel ok:", normlab.__version__, f"({checked} requirements of [all] met)")
PY
rm -f smoke.npy smoke.safetensors
