"""Incremental runs: unchanged nodes are reused from the run database, changed ones run again."""

from __future__ import annotations

import linecache
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from dagger_nb import ActionRegistry, DagExecutor, NodeContext
from dagger_nb.dag.events import NodeCached
from dagger_nb.dag.fingerprint import Unfingerprintable, code_fingerprint, value_fingerprint
from dagger_nb.errors import DaggerError, ExecutionError
from dagger_nb.graph import STATUS_COLOURS
from tests.dag.helpers import workflow

pytestmark = pytest.mark.anyio

CALLS: Counter[str] = Counter()


def load(x: int) -> int:
    CALLS["load"] += 1
    return x + 1


def double(value: int) -> int:
    CALLS["double"] += 1
    return value * 2


def double_changed(value: int) -> int:
    CALLS["double"] += 1
    return value * 2 + 1


def double_rewritten(value: int) -> int:
    CALLS["double"] += 1
    return value + value  # another way to the same number


def publish(value: int) -> str:
    CALLS["publish"] += 1
    return f"published {value}"


CHAIN = workflow(
    "chain",
    {"id": "load", "action": "load", "inputs": [{"name": "x", "reference": "inputs.x"}]},
    {"id": "double", "action": "double", "inputs": [{"name": "value", "reference": "load.result"}]},
    {"id": "publish", "action": "publish", "inputs": [{"name": "value", "reference": "double.result"}]},
)


def registry_of(**actions: Any) -> ActionRegistry:
    registry = ActionRegistry()
    for name, fn in {"load": load, "double": double, "publish": publish, **actions}.items():
        registry.register(name, fn)
    return registry


def executor(db: Path | None, registry: ActionRegistry | None = None, *specs: Any, **options: Any) -> DagExecutor:
    options.setdefault("incremental", True)
    made = DagExecutor(registry or registry_of(), db=db, **options)
    for spec in specs or (CHAIN,):
        made.add_workflow(spec)
    return made


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


def statuses(report: Any) -> dict[str, str]:
    return {node: outcome.status for node, outcome in report.outcomes.items()}


def reasons(report: Any) -> dict[str, str | None]:
    return {node: outcome.reason for node, outcome in report.outcomes.items()}


async def test_an_unchanged_workflow_is_reused_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    first_executor = executor(db)
    first = await first_executor.run("chain", inputs={"x": 1})
    first_executor.close()
    assert first.status == "succeeded" and reasons(first) == dict.fromkeys(statuses(first), "no stored result")
    assert first.cache.get("publish", "result") == "published 4"

    restarted = executor(db)  # a new process would do the same: nothing but the file is shared
    events: list[Any] = []
    handle = restarted.start("chain", inputs={"x": 1})
    handle.add_listener(events.append)
    second = await handle
    restarted.close()
    assert second.status == "succeeded"
    assert statuses(second) == {"load": "cached", "double": "cached", "publish": "cached"}
    assert CALLS == {"load": 1, "double": 1, "publish": 1}
    assert reasons(second) == dict.fromkeys(statuses(second), f"reused from run {first.run_id}")
    assert {o.cached_from for o in second.outcomes.values()} == {first.run_id}
    assert second.cache.get("publish", "result") == "published 4"
    assert second.counts() == {"cached": 3}
    assert [type(e) for e in events if isinstance(e, NodeCached)] == [NodeCached] * 3
    frame = second.to_frame()
    assert list(frame["status"]) == ["cached"] * 3 and set(frame["cached_from"]) == {first.run_id}
    assert f'fillcolor="{STATUS_COLOURS["cached"]}"' in second.to_dot()
    assert STATUS_COLOURS["cached"] in second._repr_html_()


async def test_a_changed_action_runs_again_with_the_dependents_of_its_changed_output(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with_db = executor(db)
    await with_db.run("chain", inputs={"x": 1})
    with_db.close()
    edited = executor(db, registry_of(double=double_changed))
    report = await edited.run("chain", inputs={"x": 1})
    assert statuses(report) == {"load": "cached", "double": "succeeded", "publish": "succeeded"}
    assert reasons(report)["double"] == "code changed"
    assert reasons(report)["publish"] == "input 'value' changed"
    assert report.cache.get("publish", "result") == "published 5"
    # and the edited version is what is reused next time
    again = await edited.run("chain", inputs={"x": 1})
    assert statuses(again) == dict.fromkeys(statuses(again), "cached")
    assert again.cache.get("publish", "result") == "published 5"


async def test_an_edit_that_gives_the_same_output_stops_there(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with_db = executor(db)
    await with_db.run("chain", inputs={"x": 1})
    with_db.close()
    rewritten = executor(db, registry_of(double=double_rewritten))
    report = await rewritten.run("chain", inputs={"x": 1})
    assert statuses(report) == {"load": "cached", "double": "succeeded", "publish": "cached"}
    assert CALLS == {"load": 1, "double": 2, "publish": 1}


async def test_a_changed_run_input_runs_the_nodes_that_read_it(tmp_path: Path) -> None:
    runs = executor(tmp_path / "runs.db")
    await runs.run("chain", inputs={"x": 1})
    report = await runs.run("chain", inputs={"x": 2})
    assert statuses(report) == dict.fromkeys(statuses(report), "succeeded")
    assert reasons(report)["load"] == "input 'x' changed"
    # going back to an earlier input reuses that earlier result: every fingerprint is kept
    back = await runs.run("chain", inputs={"x": 1})
    assert statuses(back) == dict.fromkeys(statuses(back), "cached")


async def test_cache_false_actions_always_run(tmp_path: Path) -> None:
    registry = registry_of()
    registry.register("double", double, cache=False)
    runs = executor(tmp_path / "runs.db", registry)
    await runs.run("chain", inputs={"x": 1})
    report = await runs.run("chain", inputs={"x": 1})
    assert statuses(report) == {"load": "cached", "double": "succeeded", "publish": "cached"}
    assert reasons(report)["double"] == "action 'double' is never reused (cache=False)"
    assert CALLS["double"] == 2


def test_the_action_decorator_takes_cache_false() -> None:
    import dagger_nb

    registry = ActionRegistry()

    @dagger_nb.action(registry=registry, cache=False)
    def now() -> float:
        return 0.0

    assert registry.get("now").cache is False and registry.get("now").fn is now
    with pytest.raises(DaggerError, match="cache must be True or False"):
        registry.register("bad", now, cache="no")  # type: ignore[arg-type]


FRAMES = workflow(
    "frames",
    {"id": "total", "action": "total", "inputs": [{"name": "frame", "reference": "inputs.frame"}]},
)


async def test_a_dataframe_input_change_is_detected(tmp_path: Path) -> None:
    def total(frame: pd.DataFrame) -> float:
        CALLS["total"] += 1  # a global: a list it closed over would count as its code
        return float(frame["a"].sum())

    runs = executor(tmp_path / "runs.db", registry_of(total=total), FRAMES)
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=["x", "y", "z"])
    await runs.run("frames", inputs={"frame": frame})
    same = await runs.run("frames", inputs={"frame": frame.copy()})
    assert statuses(same) == {"total": "cached"}
    changed_cell = frame.copy()
    changed_cell.loc["z", "a"] = 4.0
    relabelled = frame.rename(index={"z": "w"})
    retyped = frame.astype("float32")
    for variant in (changed_cell, relabelled, retyped):
        report = await runs.run("frames", inputs={"frame": variant})
        assert statuses(report) == {"total": "succeeded"}, variant
        assert reasons(report)["total"] == "input 'frame' changed"
    assert CALLS["total"] == 4


async def test_a_value_that_cannot_be_fingerprinted_runs_every_time_and_says_why(tmp_path: Path) -> None:
    def use(lock: Any) -> str:
        CALLS["use"] += 1
        return "used"

    spec = workflow("locks", {"id": "use", "action": "use", "inputs": [{"name": "lock", "reference": "inputs.lock"}]})
    runs = executor(tmp_path / "runs.db", registry_of(use=use), spec)
    lock = threading.Lock()
    for _ in range(2):
        report = await runs.run("locks", inputs={"lock": lock})
        assert statuses(report) == {"use": "succeeded"}
        assert reasons(report)["use"] == (
            "input 'lock' could not be fingerprinted (lock cannot be pickled (TypeError: cannot pickle "
            "'_thread.lock' object)); its result is not stored"
        )
    assert CALLS["use"] == 2


async def test_an_output_that_cannot_be_fingerprinted_is_not_stored(tmp_path: Path) -> None:
    def make_lock() -> Any:
        CALLS["make"] += 1
        return threading.Lock()

    spec = workflow("locks", {"id": "make", "action": "make"})
    runs = executor(tmp_path / "runs.db", registry_of(make=make_lock), spec)
    for _ in range(2):
        report = await runs.run("locks")
        assert statuses(report) == {"make": "succeeded"}
        assert any("not stored: an output could not be fingerprinted" in n for n in report.outcomes["make"].notes)
    assert CALLS["make"] == 2


async def test_settings_that_change_results_count(tmp_path: Path) -> None:
    runs = executor(tmp_path / "runs.db")
    await runs.run("chain", inputs={"x": 1})
    nodes = [node.model_dump(exclude_unset=True) for node in CHAIN.nodes]
    nodes[2]["outputs"] = [{"name": "text"}]  # the result becomes output 'text'
    nodes[1]["timeout"] = 30  # a timeout does not change what it computes
    runs.add_workflow(workflow("chain", *nodes))
    report = await runs.run("chain", inputs={"x": 1})
    assert statuses(report) == {"load": "cached", "double": "cached", "publish": "succeeded"}
    assert reasons(report)["publish"] == "settings changed"
    assert report.cache.get("publish", "text") == "published 4"


async def test_invalidate_and_clear_cache(tmp_path: Path) -> None:
    runs = executor(tmp_path / "runs.db")
    await runs.run("chain", inputs={"x": 1})
    assert runs.invalidate("chain", "double") == 1
    report = await runs.run("chain", inputs={"x": 1})
    assert statuses(report) == {"load": "cached", "double": "succeeded", "publish": "cached"}
    assert reasons(report)["double"] == "no stored result"
    assert runs.clear_cache("chain") == 3
    assert statuses(await runs.run("chain", inputs={"x": 1})) == dict.fromkeys(CALLS, "succeeded")
    assert runs.clear_cache() == 3
    with pytest.raises(DaggerError, match="workflow 'chain' has no node 'dobule'"):
        runs.invalidate("chain", "dobule")
    with pytest.raises(ExecutionError, match="needs the workflow"):
        runs.clear_cache(node="double")


async def test_fresh_and_off_run_everything(tmp_path: Path) -> None:
    runs = executor(tmp_path / "runs.db")
    await runs.run("chain", inputs={"x": 1})
    fresh = await runs.run("chain", inputs={"x": 1}, fresh=True)
    assert statuses(fresh) == dict.fromkeys(statuses(fresh), "succeeded")
    assert set(reasons(fresh).values()) == {"a fresh run was asked for"}
    off = await runs.run("chain", inputs={"x": 1}, incremental=False)
    assert statuses(off) == dict.fromkeys(statuses(off), "succeeded") and set(reasons(off).values()) == {None}
    assert CALLS == {"load": 3, "double": 3, "publish": 3}
    assert fresh.run_id in {o.cached_from for o in (await runs.run("chain", inputs={"x": 1})).outcomes.values()}


async def test_the_workflow_config_switches_it_on_and_the_executor_can_overrule(tmp_path: Path) -> None:
    nodes = [node.model_dump(exclude_unset=True) for node in CHAIN.nodes]
    switched_on = workflow("chain", *nodes, enable_incremental_cache=True)
    follows = executor(tmp_path / "a.db", None, switched_on, incremental=None)
    await follows.run("chain", inputs={"x": 1})
    assert statuses(await follows.run("chain", inputs={"x": 1}))["load"] == "cached"
    overruled = executor(tmp_path / "b.db", None, switched_on, incremental=False)
    await overruled.run("chain", inputs={"x": 1})
    assert statuses(await overruled.run("chain", inputs={"x": 1}))["load"] == "succeeded"
    plain = executor(tmp_path / "c.db", None, CHAIN, incremental=None)
    await plain.run("chain", inputs={"x": 1})
    assert statuses(await plain.run("chain", inputs={"x": 1}))["load"] == "succeeded"


async def test_without_a_db_results_are_kept_in_memory() -> None:
    runs = executor(None)
    await runs.run("chain", inputs={"x": 1})
    assert statuses(await runs.run("chain", inputs={"x": 1})) == {
        "load": "cached", "double": "cached", "publish": "cached"}


BIG = workflow(
    "big",
    {"id": "make", "action": "make", "inputs": [{"name": "seed", "reference": "inputs.seed"}]},
    {"id": "mean", "action": "mean", "inputs": [{"name": "frame", "reference": "make.result"}]},
)


def make(seed: int) -> pd.DataFrame:
    CALLS["make"] += 1
    return pd.DataFrame(np.random.default_rng(seed).random((40_000, 2)), columns=["a", "b"])


def mean(frame: pd.DataFrame) -> float:
    CALLS["mean"] += 1
    return float(frame["a"].mean())


async def test_large_values_live_beside_the_db_and_come_back_equal(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    runs = executor(db, registry_of(make=make, mean=mean), BIG)
    first = await runs.run("big", inputs={"seed": 1})
    runs.close()
    files = os.listdir(f"{db}-values")
    assert len(files) == 1 and files[0].endswith((".pickle", ".parquet"))
    again = executor(db, registry_of(make=make, mean=mean), BIG)
    second = await again.run("big", inputs={"seed": 1})
    assert statuses(second) == {"make": "cached", "mean": "cached"}
    pd.testing.assert_frame_equal(second.cache.get("make", "result"), first.cache.get("make", "result"))
    assert again.clear_cache() == 2 and os.listdir(f"{db}-values") == []


async def test_a_stored_value_that_cannot_be_read_makes_the_node_run(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    runs = executor(db, registry_of(make=make, mean=mean), BIG)
    await runs.run("big", inputs={"seed": 1})
    for name in os.listdir(f"{db}-values"):
        Path(f"{db}-values", name).write_bytes(b"damaged")
    report = await runs.run("big", inputs={"seed": 1})
    assert statuses(report) == {"make": "succeeded", "mean": "cached"}
    assert reasons(report)["make"].startswith("its stored result could not be read (stored result of node 'make'")


async def test_the_least_recently_used_results_are_evicted_beyond_max_cache_mb(tmp_path: Path) -> None:
    runs = executor(tmp_path / "runs.db", registry_of(make=make, mean=mean), BIG, max_cache_mb=1)
    for seed in (1, 2, 3):  # each frame pickles to about 0.64 MB: only the latest fits
        await runs.run("big", inputs={"seed": seed})
    assert runs._result_store().total_bytes() <= 1024 * 1024
    assert statuses(await runs.run("big", inputs={"seed": 3})) == {"make": "cached", "mean": "cached"}
    assert statuses(await runs.run("big", inputs={"seed": 1}))["make"] == "succeeded"
    with pytest.raises(ExecutionError, match="max_cache_mb must be a positive number"):
        DagExecutor(ActionRegistry(), max_cache_mb=0)


async def test_a_resumed_incremental_run_keeps_its_cached_nodes(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    runs = executor(db)
    await runs.run("chain", inputs={"x": 1})
    runs.close()
    changed = executor(db, registry_of(publish=_fails))
    stopped = await changed.run("chain", inputs={"x": 1})
    assert stopped.status == "paused"
    assert statuses(stopped) == {"load": "cached", "double": "cached", "publish": "failed"}
    changed.close()
    fixed = executor(db, registry_of(publish=_publishes_again))  # resumed from the file
    resumed = await fixed.resume(stopped.run_id)
    assert statuses(resumed) == {"load": "cached", "double": "cached", "publish": "succeeded"}
    assert resumed.cache.get("publish", "result") == "again 4"
    assert CALLS == {"load": 1, "double": 1, "publish": 1}


def _fails(value: int) -> str:
    raise ValueError("broken")


def _publishes_again(value: int) -> str:
    return f"again {value}"


# -- fingerprints ------------------------------------------------------------------------------


def test_values_have_canonical_fingerprints() -> None:
    assert value_fingerprint({"a": 1, "b": [1, 2]}) == value_fingerprint({"b": [1, 2], "a": 1})
    assert len({value_fingerprint(v) for v in (1, 1.0, True, "1", b"1", [1], (1,), {1})}) == 8
    assert value_fingerprint(float("nan")) == value_fingerprint(float("nan"))
    assert value_fingerprint({"z", "a", "m"}) == value_fingerprint({"m", "z", "a"})
    array = np.arange(6, dtype="int64").reshape(2, 3)
    assert value_fingerprint(array) == value_fingerprint(array.copy())
    assert value_fingerprint(array) != value_fingerprint(array.reshape(3, 2))
    assert value_fingerprint(array) != value_fingerprint(array.astype("int32"))
    assert value_fingerprint(array.T) == value_fingerprint(np.ascontiguousarray(array.T))
    series = pd.Series([1, 2], name="a")
    assert value_fingerprint(series) != value_fingerprint(series.rename("b"))
    assert value_fingerprint(pd.DataFrame({"a": [[1], [2]]})) != value_fingerprint(pd.DataFrame({"a": [[1], [3]]}))
    with pytest.raises(Unfingerprintable, match="lock cannot be pickled"):
        value_fingerprint({"x": [threading.Lock()]})
    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(Unfingerprintable, match="nested too deeply"):
        value_fingerprint(nested)


def test_code_fingerprints_ignore_comments_and_count_code_and_defaults() -> None:
    def build(text: str, filename: str = "<no source>") -> Any:
        namespace: dict[str, Any] = {"decorated": lambda fn: fn}
        exec(compile(text, filename, "exec"), namespace)  # no line cache: bytecode counts
        return namespace["f"]

    def with_source(text: str, filename: str) -> Any:
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
        return build(text, filename)

    plain = "def f(x, k=2):\n    return x * k\n"
    assert code_fingerprint(build(plain)) == code_fingerprint(build(plain))
    assert code_fingerprint(build(plain)) != code_fingerprint(build(plain.replace("* k", "* k + 1")))
    assert code_fingerprint(build(plain)) != code_fingerprint(build(plain.replace("k=2", "k=3")))
    nested = "def f(x):\n    def g():\n        return {}\n    return g()\n"
    assert code_fingerprint(build(nested.format("1"))) != code_fingerprint(build(nested.format("2")))
    commented = with_source("def f(x):\n    # why\n    return x * 2  # twice\n", "<cell-1>")
    bare = with_source("@decorated\ndef f(x):\n    return x * 2\n", "<cell-2>")
    edited = with_source("def f(x):\n    return x * 3\n", "<cell-3>")
    assert code_fingerprint(commented) == code_fingerprint(bare) != code_fingerprint(edited)
    assert code_fingerprint(double) != code_fingerprint(double_changed)
    assert code_fingerprint(double) != code_fingerprint(double_rewritten)


def test_values_a_factory_closes_over_count_as_code() -> None:
    def make(offset: int) -> Any:
        def shifted(value: int) -> int:
            return value + offset

        return shifted

    assert code_fingerprint(make(1)) == code_fingerprint(make(1)) != code_fingerprint(make(2))
    lock = threading.Lock()

    def uses_lock() -> None:
        with lock:
            pass

    with pytest.raises(Unfingerprintable, match="a value 'test_values_a_factory.*closes over has no fingerprint"):
        code_fingerprint(uses_lock)


def test_partials_and_methods_count_their_function_and_arguments() -> None:
    import functools

    class Scaler:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        def scale(self, value: int) -> int:
            return value * self.factor

    assert code_fingerprint(functools.partial(double, 1)) != code_fingerprint(functools.partial(double_changed, 1))
    assert code_fingerprint(functools.partial(double, 1)) != code_fingerprint(functools.partial(double, 2))
    assert code_fingerprint(Scaler(2).scale) == code_fingerprint(Scaler(2).scale) != code_fingerprint(Scaler(3).scale)


async def test_a_result_store_that_fails_to_write_leaves_a_note_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagger_nb.dag.results import ResultStore
    from dagger_nb.errors import StorageError

    def full_disk(self: ResultStore, result: Any, values: Any) -> None:
        raise StorageError(f"cannot store a result of workflow 'chain' in '{self.where}': database or disk is full")

    runs = executor(tmp_path / "runs.db")
    monkeypatch.setattr(ResultStore, "save", full_disk)
    report = await runs.run("chain", inputs={"x": 1})
    assert report.status == "succeeded" and report.cache.get("publish", "result") == "published 4"
    assert all(any("could not be stored" in note and "disk is full" in note for note in o.notes)
               for o in report.outcomes.values())
    monkeypatch.undo()
    assert statuses(await runs.run("chain", inputs={"x": 1})) == dict.fromkeys(CALLS, "succeeded")


async def test_a_ctx_action_counts_its_dependencies_outputs(tmp_path: Path) -> None:
    def source(x: int) -> int:
        return x

    def reads_itself(ctx: NodeContext) -> int:
        CALLS["reads"] += 1
        return int(ctx.cache.get("source", "result")) * 10

    spec = workflow(
        "ctx",
        {"id": "source", "action": "source", "inputs": [{"name": "x", "reference": "inputs.x"}]},
        {"id": "reader", "action": "reads", "dependencies": ["source"]},
    )
    runs = executor(tmp_path / "runs.db", registry_of(source=source, reads=reads_itself), spec)
    await runs.run("ctx", inputs={"x": 1})
    assert statuses(await runs.run("ctx", inputs={"x": 1}))["reader"] == "cached"
    changed = await runs.run("ctx", inputs={"x": 2})
    assert statuses(changed)["reader"] == "succeeded"
    assert reasons(changed)["reader"] == "outputs of dependency 'source' changed"
    assert changed.cache.get("reader", "result") == 20 and CALLS["reads"] == 2


async def test_a_node_that_added_nodes_is_never_reused(tmp_path: Path) -> None:
    def grow(ctx: NodeContext) -> str:
        CALLS["grow"] += 1
        ctx.add_node("load", inputs={"x": {"value": 1}})
        return "grown"

    spec = workflow("growing", {"id": "grow", "action": "grow"})
    runs = executor(tmp_path / "runs.db", registry_of(grow=grow), spec)
    for _ in range(2):
        report = await runs.run("growing")
        assert report.outcomes["grow"].status == "succeeded"
        assert "its result is not stored: it added nodes to the run" in report.outcomes["grow"].notes
    assert CALLS["grow"] == 2


async def test_files_left_by_a_killed_write_are_removed_when_the_store_opens(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    runs = executor(db, registry_of(make=make, mean=mean), BIG)
    await runs.run("big", inputs={"seed": 1})
    runs.close()
    folder = Path(f"{db}-values")
    kept = sorted(os.listdir(folder))
    (folder / "0123abcd.pickle.partial").write_bytes(b"half a write")
    (folder / "fedcba98.pickle").write_bytes(b"written, never committed")
    reopened = executor(db, registry_of(make=make, mean=mean), BIG)
    report = await reopened.run("big", inputs={"seed": 1})
    assert statuses(report) == {"make": "cached", "mean": "cached"}
    assert sorted(os.listdir(folder)) == kept
