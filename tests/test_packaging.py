"""What every user pays before any work: ``import normlab`` and ``normlab --help`` stay light."""

import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nsys.stderr.write(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stderr
    return set(out.split())


def test_import_normlab_does_not_import_numba() -> None:
    modules = _modules_after("import normlab")
    assert "numba" not in modules
    assert "normlab.kernels" not in modules


@pytest.mark.parametrize("argv", [["--help"], ["stats", "--help"], ["fit", "--help"]])
def test_cli_help_imports_no_kernel(argv: list[str]) -> None:
    code = (
        "import sys\n"
        f"sys.argv = ['normlab', *{argv!r}]\n"
        "from normlab.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    modules = _modules_after(code)
    assert "numba" not in modules
    assert not any(m.startswith("normlab.kernels") for m in modules)
