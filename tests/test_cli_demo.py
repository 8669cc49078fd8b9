"""`make demo` writes where it says and nowhere in the checkout; Binder installs the tested versions."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def test_demo_without_out_writes_to_a_temporary_folder_and_says_where(tmp_path: Path) -> None:
    # Run from an empty folder: nothing may appear there (as nothing may appear in the checkout).
    result = subprocess.run([sys.executable, "-m", "dagger_nb.examples.demo"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
    where = re.search(r"The demo's files are in (\S+)", result.stdout)
    assert where is not None, result.stdout
    folder = Path(where[1])
    assert folder.is_absolute() and (folder / "sales_pipeline.svg").is_file()
    assert not folder.is_relative_to(ROOT)


def test_make_demo_writes_into_a_git_ignored_folder() -> None:
    makefile = (ROOT / "Makefile").read_text()
    demo = re.search(r"^demo:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert demo is not None
    out = re.search(r"--out (\S+)", demo[1])
    assert out is not None, "make demo must name its output folder"
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{out[1]}/sales_pipeline.svg"], cwd=ROOT,
                             check=False)
    assert ignored.returncode == 0, f"{out[1]}/ is not git-ignored"


def test_binder_installs_the_tested_versions() -> None:
    post_build = (ROOT / "binder" / "postBuild").read_text()
    install = [line for line in post_build.splitlines() if "pip install" in line and not line.startswith("#")]
    assert install and all("-c constraints.txt" in line for line in install)
    constraints = _pins(ROOT / "constraints.txt")
    requirements = _pins(ROOT / "binder" / "requirements.txt")
    assert requirements, "binder/requirements.txt pins nothing"
    for name, version in requirements.items():
        pinned = constraints.get(name)
        assert pinned == version, f"binder pins {name}=={version}, constraints.txt {pinned}"


def test_readme_names_no_placeholder_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "mybinder.org/v2/gh/dagger-nb/dagger-nb" not in readme
    assert "github.com/dagger-nb" not in readme
