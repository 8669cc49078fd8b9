"""The shape the code promises: small modules, one owner of background work, one thread hop.

The layering (which package may import which) is checked in ``test_core_imports.py``; these
checks keep the pieces that the three paradigms share from being copied back into them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dagger_nb

PACKAGE = Path(dagger_nb.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
#: user code shipped as examples, not library code
LIBRARY_MODULES = [path for path in MODULES if "examples" not in path.relative_to(PACKAGE).parts]
LOOP_MODULE = PACKAGE / "_loop.py"

#: What only the loop module may do, and why.
ONLY_IN_THE_LOOP_MODULE = {
    # a bare task nobody awaits: background work goes through BackgroundGroup
    r"\bloop\.create_task\(|get_running_loop\(\)\.create_task\(|asyncio\.create_task\(|ensure_future\(": "a bare task",
    # calling onto a loop from another thread goes through LoopHop, call_soon_on or submit_to
    r"\bfrom_thread\b|call_soon_threadsafe|run_coroutine_threadsafe": "a thread-to-loop hop",
    # one message for a call made where no loop runs: require_loop()
    r"needs a running event loop": "a no-loop message",
    # blocking on async work goes through run_sync()
    r"start_blocking_portal|anyio\.run\(": "a sync facade",
}


def relative(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_no_module_is_over_500_lines() -> None:
    sizes = {relative(path): len(path.read_text().splitlines()) for path in MODULES}
    assert len(sizes) > 60
    too_long = {name: lines for name, lines in sizes.items() if lines > 500}
    assert not too_long, too_long


@pytest.mark.parametrize(("pattern", "what"), ONLY_IN_THE_LOOP_MODULE.items(), ids=ONLY_IN_THE_LOOP_MODULE.values())
def test_only_the_loop_module_does_it(pattern: str, what: str) -> None:
    found = [
        f"{relative(path)}:{number}: {line.strip()}"
        for path in LIBRARY_MODULES
        if path != LOOP_MODULE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(pattern, line) and not line.lstrip().startswith(">>>")  # doctests show user code
    ]
    assert not found, f"{what} outside dagger_nb/_loop.py:\n" + "\n".join(found)


def test_the_checks_see_what_they_forbid() -> None:
    loop_source = LOOP_MODULE.read_text()
    for pattern in ("from_thread", "call_soon_threadsafe", "run_coroutine_threadsafe", "needs a running event loop",
                    r"anyio\.run\(", r"loop\.create_task\("):
        assert re.search(pattern, loop_source), pattern
