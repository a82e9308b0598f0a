"""Run every benchmark: each ``bench/bench_*.py`` module's ``main()``, one after another.

Usage: ``python bench/run.py`` (also ``make bench``); ``--only NAME`` runs one module
(``--only moments`` or ``--only bench_moments``, may be repeated); arguments after ``--`` are
passed to each module's own command line (for example ``-- --quick``).

Modules are discovered by file name, so a new ``bench_<topic>.py`` joins without editing this
file. A module that sets ``RUN_BY_DEFAULT = False`` (a long check such as the 30 GB one) runs
only when named with ``--only``. A module whose optional dependency is missing is skipped with
a line saying which.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parent


def discover() -> dict[str, Path]:
    """``{topic: path}`` of every ``bench_<topic>.py`` next to this file, in name order."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def run_one(name: str, path: Path, passthrough: list[str], *, named: bool) -> str:
    """Run one module; returns "ok", "skipped" or "failed"."""
    try:
        module = _load(name, path)
    except ModuleNotFoundError as exc:
        print(f"skip {name}: optional dependency {exc.name!r} is not installed")
        return "skipped"
    if not named and not getattr(module, "RUN_BY_DEFAULT", True):
        print(f"skip {name}: not run by default (python bench/run.py --only {name})")
        return "skipped"
    if not callable(getattr(module, "main", None)):
        print(f"skip {name}: no main()")
        return "skipped"
    print(f"\n===== {name} ({path.name}) =====", flush=True)
    argv, sys.argv = sys.argv, [str(path), *passthrough]
    start = time.perf_counter()
    try:
        module.main()
    except ModuleNotFoundError as exc:
        print(f"skip {name}: optional dependency {exc.name!r} is not installed")
        return "skipped"
    except SystemExit as exc:
        if exc.code not in (None, 0):
            print(f"FAILED {name}: exit status {exc.code}")
            return "failed"
    except Exception:  # one broken benchmark must not hide the others' figures
        traceback.print_exc()
        print(f"FAILED {name}")
        return "failed"
    finally:
        sys.argv = argv
    print(f"({name}: {time.perf_counter() - start:.1f} s)", flush=True)
    return "ok"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description="Run normlab's benchmarks (bench/bench_*.py).")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this module")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    args = parser.parse_args(argv)
    modules = discover()
    if args.list:
        print("\n".join(modules))
        return 0
    wanted = [n.removeprefix("bench_").removesuffix(".py") for n in args.only or []]
    unknown = [n for n in wanted if n not in modules]
    if unknown:
        parser.error(f"no benchmark named {', '.join(unknown)}; have: {', '.join(modules)}")
    selected = wanted or list(modules)
    results = {n: run_one(n, modules[n], passthrough, named=bool(wanted)) for n in selected}
    print("\nbenchmarks: " + ", ".join(f"{n} {r}" for n, r in results.items()))
    return 1 if "failed" in results.values() else 0


if __name__ == "__main__":
    sys.exit(main())
