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
import normlab
assert "site-packages" in normlab.__file__, normlab.__file__
for module in ("normlab.sklearn", "normlab.torch", "normlab.export", "normlab.engines.dask"):
    importlib.import_module(module)
print("wheel ok:", normlab.__version__)
PY
rm -f smoke.npy smoke.safetensors
