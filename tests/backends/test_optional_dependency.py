"""dagger-nb imports without dask; asking for the Dask backend then says what to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCK_DASK = """
import sys
for name in ("dask", "distributed"):
    sys.modules[name] = None  # "import dask" now raises ImportError
"""


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_DASK + textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "lookup",
    ["from dagger_nb.backends import DaskBackend", "DaskBackend = dagger_nb.DaskBackend"],
    ids=["backends-module", "top-level"],
)
def test_without_dask_the_backend_raises_backend_unavailable(lookup: str) -> None:
    result = run(f"""
        import dagger_nb
        assert "dask" not in [m for m in sys.modules if sys.modules[m] is not None]
        {lookup}
        try:
            DaskBackend(object())
        except dagger_nb.BackendUnavailable as error:
            assert isinstance(error, ImportError)
            print(error)
        else:
            raise SystemExit("no error")
    """)
    assert result.returncode == 0, result.stderr
    assert "pip install dagger-nb[dask]" in result.stdout


def test_importing_dagger_nb_does_not_import_dask() -> None:
    code = "import sys, dagger_nb; print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
