"""The core imports and works without IPython or ipywidgets; the public API list stays sorted."""

from __future__ import annotations

import importlib
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


HEAVY = ("pandas", "jsonschema", "graphviz", "IPython", "ipywidgets")

LIGHT_RUN = textwrap.dedent(
    """
    import sys

    import dagger_nb

    def loaded():
        return sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[2].split(",")))

    assert loaded() == [], ("import", loaded())
    from dagger_nb import Cache, PubSub, TaskManager, render_svg  # every paradigm's entry point

    assert loaded() == [], ("paradigms", loaded())
    registry = dagger_nb.ActionRegistry()
    registry.register("add_numbers", lambda num1, num2: num1 + num2)
    registry.register("square_number", lambda num: num * num)
    registry.register("triple_number", lambda num: 3 * num)
    registry.register("failure_function1", lambda: None)
    registry.register("failure_function2", lambda: None)
    executor = dagger_nb.DagExecutor(registry)
    executor.load_yaml_file(sys.argv[1] + "/chain_3.yaml")
    report = executor.run("chain_3", inputs={"num1": 1, "num2": 2})
    assert report.status == "succeeded", report.status
    assert report.cache.get("node3", "tripled_result") == 27
    assert loaded() == [], ("run", loaded())
    report.to_frame()  # asked for a frame: pandas arrives now
    assert loaded() == ["pandas"], ("frame", loaded())
    print("light ok")
    """
)


def test_import_and_a_three_node_run_load_no_heavy_library(resources: Path) -> None:
    """The import and a first workflow run stay fast: pandas, jsonschema, graphviz and the
    notebook layer are imported only when something needs them."""
    result = subprocess.run(
        [sys.executable, "-c", LIGHT_RUN, str(resources), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "light ok\n", "")


VALIDATE = textwrap.dedent(
    """
    import sys

    from dagger_nb.cli import main

    code = main(["validate", sys.argv[1]])
    print(code, sorted({name.split(".")[0] for name in sys.modules} & set(sys.argv[2].split(","))))
    """
)


def test_cli_validate_loads_no_heavy_library(resources: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", VALIDATE, str(resources / "chain_3.yaml"), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 []", result.stdout


def test_checking_a_workflow_does_not_load_the_executor(resources: Path) -> None:
    program = (
        "import sys\n"
        "from dagger_nb.dag import load_workflow\n"
        f"load_workflow({str(resources / 'diamond_4.yaml')!r})\n"
        "print(sorted(n for n in ('dagger_nb.dag.executor', 'dagger_nb.dag.store', 'sqlite3') if n in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False)
    assert (result.stdout, result.stderr) == ("[]\n", "")


@pytest.mark.parametrize("name", ["Cache", "DagExecutor", "TaskManager", "PubSub", "CacheKeyError"])
def test_lazy_names_are_the_real_objects(name: str) -> None:
    module = {"Cache": "cache", "DagExecutor": "dag", "TaskManager": "agents", "PubSub": "pubsub"}
    source = importlib.import_module("dagger_nb." + module.get(name, "errors"))
    assert getattr(dagger_nb, name) is getattr(source, name)
    assert name in dir(dagger_nb)


ATTRIBUTES = "import dagger_nb; print(dagger_nb.dag.DagExecutor.__name__, dagger_nb.errors.DaggerError)"


def test_subpackages_are_reachable_as_attributes() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import dagger_nb; print(dagger_nb.dag.DagExecutor.__name__, dagger_nb.errors.DaggerError)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.stdout == "DagExecutor <class 'dagger_nb.errors.DaggerError'>\n", result.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        dagger_nb.NoSuchThing  # noqa: B018
