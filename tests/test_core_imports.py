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
    report = executor.run_sync("chain_3", inputs={"num1": 1, "num2": 2})
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


def test_importing_the_package_imports_nothing_else() -> None:
    # Not even typing: the public names are imported on first access.
    program = "import sys\nbefore = set(sys.modules)\nimport dagger_nb\nprint(sorted(set(sys.modules) - before))\n"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False)
    assert (result.stdout, result.stderr) == ("['dagger_nb']\n", "")


def test_a_run_without_a_database_loads_no_sqlite(resources: Path) -> None:
    """The run store and the stored results (and SQLite with them) come with ``db=`` or an
    incremental run, not with every executor; pickle with a value to fingerprint or store,
    html with a report shown in a notebook."""
    program = textwrap.dedent(
        f"""
        import sys
        import dagger_nb

        registry = dagger_nb.ActionRegistry()
        registry.register("add_numbers", lambda num1, num2: num1 + num2)
        registry.register("square_number", lambda num: num * num)
        registry.register("triple_number", lambda num: 3 * num)
        registry.register("failure_function1", lambda: None)
        registry.register("failure_function2", lambda: None)
        executor = dagger_nb.DagExecutor(registry)
        executor.load_yaml_file({str(resources / "chain_3.yaml")!r})
        report = executor.run_sync("chain_3", inputs={{"num1": 1, "num2": 2}})
        assert report.cache.get("node3", "tripled_result") == 27
        print(sorted(n for n in ("sqlite3", "dagger_nb.storage", "dagger_nb.dag.store", "dagger_nb.dag.results",
                                 "pickle", "html") if n in sys.modules))
        """
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False)
    assert (result.stdout, result.stderr) == ("[]\n", "")


def test_validating_a_correct_file_loads_no_hint_or_json_module(resources: Path) -> None:
    # difflib suggests names for mistakes only; json and shlex serve `run` only.
    program = (
        "import sys\n"
        "from dagger_nb.cli import main\n"
        f"code = main(['validate', {str(resources / 'diamond_4.yaml')!r}])\n"
        "print(code, sorted(n for n in ('difflib', 'json', 'shlex', 'sqlite3') if n in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False)
    assert result.stderr == ""
    assert result.stdout.splitlines()[-1] == "0 []", result.stdout


def test_loading_a_workflow_parses_no_builtin_signature(resources: Path) -> None:
    # pydantic reads each default factory's signature; a builtin's (``list``) is parsed from text
    # by the tokenizer, whose regular expressions cost more to compile than a small workflow's run.
    program = (
        "import sys, tokenize\n"
        "from dagger_nb.dag import load_workflow\n"
        f"load_workflow({str(resources / 'diamond_4.yaml')!r})\n"
        "print(tokenize._compile.cache_info().currsize)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=False)
    assert (result.stdout, result.stderr) == ("0\n", "")


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


# -- layering: imports run from higher layers to lower ones, never back up -------------------------------

PACKAGE = Path(dagger_nb.__file__).parent


def imported_modules(path: Path, source: str | None = None) -> list[tuple[int, str, str | None]]:
    """Every module the module at ``path`` imports (``TYPE_CHECKING`` and function-level imports
    included, relative ones resolved; ``from X import y`` counts as X): ``(line, module, enclosing
    function or None)``."""
    import ast

    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = ".".join(parts[:-1])  # a package's __init__ is its own package, a module's its parent
    found: list[tuple[int, str, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name, function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    names = package.split(".")
                    anchor = ".".join(names[: len(names) - child.level + 1])
                    base = f"{anchor}.{base}" if base else anchor
                if child.module:
                    found.append((child.lineno, base, function))
                else:  # from . import x: x is a module
                    found.extend((child.lineno, f"{base}.{alias.name}", function) for alias in child.names)
            visit(child, function)

    visit(ast.parse(path.read_text() if source is None else source, str(path)), None)
    return found


def reaches(imported: str, layer: str) -> bool:
    return imported == layer or imported.startswith(layer + ".")


def test_the_import_parser_sees_every_kind_of_import() -> None:
    source = (
        "import dagger_nb.pubsub\nfrom ..dag import actions\nfrom .. import agents\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from dagger_nb.notebook import session\n"
        "def later():\n    from dagger_nb.dag.run import Run\n"
    )
    seen = {(module, function) for _, module, function in imported_modules(PACKAGE / "backends" / "probe.py", source)}
    assert seen == {("dagger_nb.pubsub", None), ("dagger_nb.dag", None), ("dagger_nb.agents", None), ("typing", None),
                    ("dagger_nb.notebook", None), ("dagger_nb.dag.run", "later")}
    in_init = imported_modules(PACKAGE / "backends" / "dask" / "__init__.py", "from .worker import PUSH_LIMIT\n")
    assert in_init == [(1, "dagger_nb.backends.dask.worker", None)]


def test_backends_import_no_paradigm_and_no_notebook() -> None:
    """A backend runs a callable with its arguments: it knows nothing of workflows, jobs, pub/sub or
    the notebook (the DAG hands it what a remote context needs)."""
    higher = ("dagger_nb.dag", "dagger_nb.agents", "dagger_nb.pubsub", "dagger_nb.notebook")
    modules = sorted((PACKAGE / "backends").rglob("*.py"))
    assert len(modules) >= 6  # the backends' __init__ and the Dask package's five modules
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in modules
        for line, module, _ in imported_modules(path)
        if any(reaches(module, layer) for layer in higher)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_core_module_imports_the_notebook_layer() -> None:
    """Only ``%load_ext dagger_nb`` (the root's ``load_ipython_extension``) reaches into the notebook
    layer; every other module outside ``dagger_nb/notebook/`` stays importable without it."""
    modules = [path for path in sorted(PACKAGE.rglob("*.py")) if "notebook" not in path.relative_to(PACKAGE).parts]
    assert len(modules) > 50
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in modules
        for line, module, function in imported_modules(path)
        if reaches(module, "dagger_nb.notebook")
        and not (path == PACKAGE / "__init__.py" and function == "load_ipython_extension")
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", ["_callables.py", "cache.py", "errors.py"])
def test_the_shared_lower_modules_import_no_paradigm(module: str) -> None:
    """What the paradigms and the backends share sits below all of them."""
    higher = ("dagger_nb.dag", "dagger_nb.agents", "dagger_nb.pubsub", "dagger_nb.backends", "dagger_nb.notebook")
    wrong = [f"{module}:{line} imports {name}" for line, name, _ in imported_modules(PACKAGE / module)
             if any(reaches(name, layer) for layer in higher)]
    assert not wrong, "\n".join(wrong)
