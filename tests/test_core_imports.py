"""The core imports and works without IPython or ipywidgets; the public API list stays sorted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dagger_nb

BLOCKED_CORE = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = ("IPython", "ipywidgets", "ipykernel", "traitlets", "comm")


    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None


    sys.meta_path.insert(0, Blocker())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]

    try:
        import IPython  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker does not work")

    import dagger_nb
    import dagger_nb.errors
    from dagger_nb.dag import WorkflowSpec, load_workflow, load_workflows
    from dagger_nb.dag.dot import workflow_dot
    from dagger_nb.dag.loader import parse_workflow

    resources = sys.argv[1]
    spec = load_workflow(resources + "/diamond_4.yaml")
    assert isinstance(spec, WorkflowSpec)
    assert spec.topological_order() == ["load", "by_region", "by_month", "report"]
    dot = workflow_dot(spec)
    assert dot.startswith('digraph "diamond_4" {'), dot
    assert '"load" -> "by_region";' in dot
    assert len(load_workflows(resources)) >= 5
    try:
        parse_workflow("name: w\\nnodes: [{id: a, action: x, dependencies: [b]}]\\n")
    except dagger_nb.errors.WorkflowSpecError as error:
        assert "dependency 'b' is not a node" in str(error)
    else:
        raise SystemExit("no WorkflowSpecError")
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    print("core ok")
    """
)


def test_core_works_without_ipython_and_ipywidgets(resources: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_CORE, str(resources)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "core ok\n", "")


def test_all_is_sorted_and_unique() -> None:
    assert dagger_nb.__all__ == sorted(dagger_nb.__all__)
    assert len(dagger_nb.__all__) == len(set(dagger_nb.__all__))


def test_every_exported_name_exists() -> None:
    missing = [name for name in dagger_nb.__all__ if not hasattr(dagger_nb, name)]
    assert missing == []


SPEC_EXPORTS = [
    "DagConfig",
    "InputSpec",
    "NodeSpec",
    "OutputSpec",
    "RetryStrategy",
    "WorkflowSpec",
    "load_workflow",
    "load_workflows",
]


def test_workflow_spec_api_is_exported(resources: Path) -> None:
    assert set(SPEC_EXPORTS) <= set(dagger_nb.__all__)
    spec = dagger_nb.load_workflow(resources / "chain_3.yaml")
    assert isinstance(spec, dagger_nb.WorkflowSpec)
    assert isinstance(spec.config, dagger_nb.DagConfig)
    assert isinstance(spec.nodes[0], dagger_nb.NodeSpec)
    assert isinstance(spec.nodes[0].inputs[0], dagger_nb.InputSpec)
    assert isinstance(spec.nodes[0].outputs[0], dagger_nb.OutputSpec)
    assert isinstance(spec.config.retry_strategy, dagger_nb.RetryStrategy)
    assert spec.name in {workflow.name for workflow in dagger_nb.load_workflows(resources)}
    with pytest.raises(dagger_nb.WorkflowSpecError, match=r"^x\.yaml: file not found$"):
        dagger_nb.load_workflow("x.yaml")
