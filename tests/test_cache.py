"""The pandas-backed cache."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from dagger_nb import Cache, CacheConfig, CacheKeyError, DaggerError, InputSpec, get_value, parse_input_from_name


def test_insert_get_namespace_len_and_clear() -> None:
    cache = Cache()
    cache.insert("load", "rows", 3)
    cache.insert("load", "name", "x")
    cache.insert("other", "k", None)
    assert cache.get("load", "rows") == 3 and len(cache) == cache.len() == 3
    assert cache.namespace("load") == {"rows": 3, "name": "x"}
    assert cache.get("missing", "k", default="d") == "d"
    cache.clear("load")
    assert cache.namespaces() == ["other"]
    cache.clear()
    assert len(cache) == 0


def test_missing_key_names_namespace_and_key() -> None:
    with pytest.raises(
        CacheKeyError, match="^cache has no key 'rows' in namespace 'load', which holds nothing; the cache is empty$"
    ) as caught:
        Cache().get("load", "rows")
    assert isinstance(caught.value, KeyError) and caught.value.namespace == "load"


def test_a_missing_key_lists_what_the_namespace_holds() -> None:
    cache = Cache()
    cache.insert("cfg", "model", "m")
    with pytest.raises(CacheKeyError, match="^cache has no key 'result' in namespace 'cfg', which holds key 'model'$"):
        cache.get("cfg", "result")
    cache.insert("cfg", "temperature", 0.2)
    with pytest.raises(CacheKeyError, match="which holds keys 'model', 'temperature'$") as caught:
        get_value(cache, "cfg", "result")
    assert caught.value.held_keys == ("model", "temperature")


def test_the_listing_is_bounded_on_a_namespace_with_many_keys() -> None:
    cache = Cache()
    for i in range(10_000):
        cache.insert("wide", f"key{i}", i)
    with pytest.raises(CacheKeyError) as caught:
        cache.get("wide", "result")
    message = str(caught.value)
    assert message.endswith("which holds 10000 keys: 'key0', 'key1', 'key2', 'key3', 'key4' and 9995 more")
    assert len(message) < 200


def test_a_mistyped_namespace_lists_the_namespaces() -> None:
    cache = Cache()
    cache.insert("load", "rows", 3)
    cache.insert("clean", "rows", 2)
    with pytest.raises(
        CacheKeyError,
        match="^cache has no key 'rows' in namespace 'laod', which holds nothing; "
        "the cache holds namespaces 'load', 'clean'$",
    ):
        cache.get("laod", "rows")
    with pytest.raises(
        CacheKeyError, match="^cache has no namespace 'lod'; the cache holds namespaces 'load', 'clean'$"
    ):
        cache["lod"]


def test_an_unknown_input_name_lists_the_node_inputs() -> None:
    inputs = [InputSpec(name="topic", value="bees"), InputSpec(name="limit", reference="inputs.limit")]
    with pytest.raises(
        CacheKeyError, match="^cache has no key 'nam' in namespace 'inputs', which holds keys 'topic', 'limit'$"
    ):
        parse_input_from_name(Cache(), "nam", inputs)
    assert parse_input_from_name(Cache(), "topic", inputs) == "bees"


def test_indexing_reads_a_namespace() -> None:
    cache = Cache()
    cache.insert("task-1", "output", {"answer": 42})
    assert cache["task-1"]["output"] == {"answer": 42}
    cache["task-1"]["output"] = "changed"  # a copy: the cache keeps its value
    assert cache.get("task-1", "output") == {"answer": 42}
    with pytest.raises(
        CacheKeyError, match="^cache has no namespace 'task-2'; the cache holds namespace 'task-1'$"
    ) as caught:
        cache["task-2"]
    assert isinstance(caught.value, KeyError) and caught.value.key is None


def test_values_are_stored_as_given_and_shown_as_a_frame() -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    cache = Cache()
    cache.insert("n", "frame", frame)
    cache.insert("n", "count", 2)
    assert cache.get("n", "frame") is frame
    table = cache.to_frame()
    assert list(table.columns) == ["namespace", "key", "value", "type", "updated_at"]
    assert list(table["type"]) == ["DataFrame", "int"]
    assert str(table["updated_at"].dtype).startswith("datetime64")


def test_json_round_trip_in_the_rust_layout() -> None:
    cache = Cache()
    cache.insert("inputs", "num1", 1.5)
    cache.insert("node1", "sum", [1, {"a": None}])
    text = cache.to_json()
    assert text == '{"inputs": {"num1": {"value": 1.5}}, "node1": {"sum": {"value": [1, {"a": null}]}}}'
    assert Cache.from_json(text).items() == cache.items()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "cache JSON is invalid"),
        ("[]", "must be an object of namespaces"),
        ('{"ns": 1}', "namespace 'ns' must be an object"),
        ('{"ns": {"k": 1}}', "entry 'ns.k' must be an object"),
    ],
    ids=["syntax", "not-object", "namespace", "entry"],
)
def test_from_json_errors(text: str, message: str) -> None:
    with pytest.raises(DaggerError, match=message):
        Cache.from_json(text)


def test_to_json_names_the_value_that_is_not_json() -> None:
    cache = Cache()
    cache.insert("n", "frame", pd.DataFrame())
    with pytest.raises(DaggerError, match="cache value 'n.frame' of type DataFrame is not JSON-serialisable"):
        cache.to_json()


def test_lru_eviction_respects_retained_namespaces() -> None:
    cache = Cache(CacheConfig(max_entries=2))
    cache.retain("keep")
    cache.insert("keep", "a", 1)
    cache.insert("x", "b", 2)
    cache.insert("y", "c", 3)
    assert cache.contains("keep", "a") and not cache.contains("x", "b") and cache.contains("y", "c")
    cache.release("keep")
    cache.insert("z", "d", 4)
    assert not cache.contains("keep", "a")


def test_memory_limit_evicts_least_recently_used() -> None:
    cache = Cache(CacheConfig(max_memory_mb=1))
    cache.insert("a", "big", b"x" * 700_000)
    cache.insert("b", "big", b"x" * 700_000)
    assert not cache.contains("a", "big") and cache.contains("b", "big")


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        CacheConfig(max_entries=0)


def test_thread_safe_inserts() -> None:
    cache = Cache()

    def fill(worker: int) -> None:
        for i in range(1000):
            cache.insert(f"w{worker}", str(i), i)

    threads = [threading.Thread(target=fill, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 4000


def test_a_read_makes_a_value_the_most_recently_used_in_a_limited_cache() -> None:
    cache = Cache(CacheConfig(max_entries=2))
    cache.insert("a", "k", 1)
    cache.insert("b", "k", 2)
    assert cache.get("a", "k") == 1
    cache.insert("c", "k", 3)
    assert cache.items() == [("a", "k", 1), ("c", "k", 3)]


def test_a_read_keeps_the_order_of_an_unlimited_cache_and_a_rewrite_goes_last() -> None:
    cache = Cache()
    cache.insert("a", "k", 1)
    cache.insert("b", "k", 2)
    assert cache.get("a", "k") == 1
    assert cache.namespaces() == ["a", "b"]
    cache.insert("a", "k", 3)
    assert cache.items() == [("b", "k", 2), ("a", "k", 3)]
