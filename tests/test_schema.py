"""jsonschema is imported in a worker thread, never on the event loop, and every schema use waits for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from dagger_nb import schema as schema_module


def run_fresh(program: str) -> str:
    """Run ``program`` in a fresh interpreter (jsonschema not imported yet); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(program)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_loop_keeps_running_while_jsonschema_imports() -> None:
    out = run_fresh(
        """
        import asyncio, sys, threading, time
        from dagger_nb.schema import _JSONSCHEMA, compile_schema_async

        async def main():
            assert "jsonschema" not in sys.modules
            gaps, done = [], asyncio.Event()

            async def tick():
                last = time.perf_counter()
                while not done.is_set():
                    await asyncio.sleep(0.005)
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now

            ticker = asyncio.create_task(tick())
            await asyncio.sleep(0.02)
            start = time.perf_counter()
            compiled = await compile_schema_async({"type": "object", "required": ["a"]}, where="question")
            took = time.perf_counter() - start
            done.set()
            await ticker
            assert compiled.is_valid({"a": 1}) and not compiled.is_valid({})
            print(threading.current_thread().name, _JSONSCHEMA.importing_thread, sep="|")
            print(f"{took:.3f} {max(gaps):.3f} {len(gaps)}")

        asyncio.run(main())
        """
    )
    threads, timings = out.splitlines()
    loop_thread, import_thread = threads.split("|")
    assert loop_thread == "MainThread" and import_thread == "dagger-nb-import-jsonschema"
    took, worst_gap, ticks = timings.split()
    # The loop ticked all along: its longest pause is a small part of the import's duration.
    assert float(worst_gap) < float(took) / 3, timings
    assert int(ticks) >= 5, timings


def test_a_schema_registered_right_after_the_preload_waits_for_the_import() -> None:
    out = run_fresh(
        """
        import sys, threading
        from dagger_nb.errors import InvalidSchemaError, SchemaValidationError
        from dagger_nb.schema import _JSONSCHEMA, compile_schema, preload_jsonschema

        preload_jsonschema()
        results = []

        def register(i):
            compiled = compile_schema({"type": "object", "required": [f"k{i}"]}, where=f"agent {i}")
            try:
                compiled.validate({})
            except SchemaValidationError as error:
                results.append(str(error))

        threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        register(8)
        for thread in threads:
            thread.join()
        try:
            compile_schema({"type": 12}, where="channel 'c'")
        except InvalidSchemaError as error:
            results.append(str(error).split(":")[0])
        print(_JSONSCHEMA.importing_thread)
        print(*sorted(results), sep="\\n")
        """
    )
    lines = out.splitlines()
    assert lines[0] == "dagger-nb-import-jsonschema"
    assert lines[1:] == [f"agent {i}: invalid payload at '$': 'k{i}' is a required property" for i in range(9)] + [
        "channel 'c'"
    ]


def test_a_failed_import_is_reported_to_every_waiter_and_parse_errors_come_first() -> None:
    out = run_fresh(
        """
        import importlib.abc, sys

        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "jsonschema":
                    raise ImportError("jsonschema is blocked in this test")

        sys.meta_path.insert(0, Blocker())
        from dagger_nb.errors import InvalidSchemaError
        from dagger_nb.schema import compile_schema

        try:
            compile_schema("{not json", where="agent 'a' input")
        except InvalidSchemaError as error:
            print(error)
        for _ in range(2):
            try:
                compile_schema({"type": "object"}, where="agent 'a' input")
            except ImportError as error:
                print(error)
        """
    )
    lines = out.splitlines()
    assert lines[0].startswith("agent 'a' input: schema is not valid JSON")
    assert lines[1] == lines[2] == "jsonschema failed to import: ImportError('jsonschema is blocked in this test')"


def test_loading_the_extension_starts_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    pending = schema_module._BackgroundImport()
    loaded: list[object] = []
    monkeypatch.setattr(schema_module, "_JSONSCHEMA", pending)
    import dagger_nb.notebook

    monkeypatch.setattr(dagger_nb.notebook, "load_ipython_extension", loaded.append)
    shell = object()
    dagger_nb.load_ipython_extension(shell)
    assert loaded == [shell]
    assert pending.wait() is sys.modules["jsonschema"]
    assert pending.importing_thread == "dagger-nb-import-jsonschema"


async def test_a_question_schema_is_compiled_without_blocking(anyio_backend: str) -> None:
    compiled = await schema_module.compile_schema_async('{"type": "integer"}', where="answer to 'age?'")
    assert compiled is not None and compiled.is_valid(3) and not compiled.is_valid("3")
    assert await schema_module.compile_schema_async(None, where="x") is None
