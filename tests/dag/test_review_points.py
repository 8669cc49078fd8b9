"""Review points of a supervisor loop (``config.review_frequency``): every N steps a person reviews."""

from __future__ import annotations

from typing import Any

import pytest

import dagger_nb
from dagger_nb.dag import ActionRegistry, DagConfig, DagExecutor, RunHandle
from dagger_nb.dag.events import HumanInputReceived, HumanInputRequested
from dagger_nb.dag.human import REVIEW_SCHEMA, review_due
from dagger_nb.errors import SchemaValidationError

pytestmark = pytest.mark.anyio

STEPS = 5  # iterations 0..4: with review_frequency=2, reviews come before iterations 2 and 4


def _loop(**config: Any) -> tuple[DagExecutor, list[tuple[int, str | None]]]:
    """An executor whose supervisor runs STEPS steps, each recording (iteration, review_note)."""
    registry = ActionRegistry()
    seen: list[tuple[int, str | None]] = []

    @dagger_nb.action(registry=registry)
    async def tool(iteration: int) -> int:
        return iteration * 10

    @dagger_nb.action(registry=registry)
    async def supervisor_step(iteration: int, ctx: dagger_nb.NodeContext, review_note: str | None = None) -> int:
        seen.append((iteration, review_note))
        if iteration + 1 < STEPS:
            tool_id = ctx.add_node("tool", inputs={"iteration": {"value": iteration}}, dependencies=[ctx.node])
            ctx.add_node("supervisor_step", dependencies=[tool_id])
        return iteration

    return DagExecutor(registry, config=DagConfig(**config)), seen


async def _answer_reviews(handle: RunHandle, answers: list[dict[str, Any]]) -> list[HumanInputRequested]:
    """Answer the run's review questions in order with ``answers``; the questions asked."""
    asked: list[HumanInputRequested] = []
    async for event in handle.subscribe():
        if isinstance(event, HumanInputRequested):
            asked.append(event)
            if answers:
                handle.respond(event.request_id, answers.pop(0))
    return asked


def test_review_is_due_every_n_steps_never_before_the_first() -> None:
    assert [i for i in range(9) if review_due(i, 3)] == [3, 6]
    assert not any(review_due(i, None) for i in range(9))


async def test_approve_continues_and_the_question_summarises_the_steps() -> None:
    executor, seen = _loop(review_frequency=2)
    async with executor:
        handle = executor.start_agent_dag("count")
        asked = await _answer_reviews(handle, [{"decision": "approve"}, {"decision": "approve"}])
        report = await handle.wait()
    assert report.status == "succeeded"
    assert [iteration for iteration, _ in seen] == [0, 1, 2, 3, 4]
    assert [event.node for event in asked] == ["supervisor_step_3", "supervisor_step_5"]
    assert asked[0].schema == REVIEW_SCHEMA
    prompt = asked[0].prompt
    assert prompt.startswith("Review of 'count' after 2 supervisor steps")
    assert "- supervisor_step_1 (supervisor_step): succeeded: 0" in prompt
    assert "- tool_2 (tool): succeeded: 10" in prompt
    assert "supervisor_step_3" not in prompt  # the step under review has not run


async def test_stop_ends_the_run_cancelled_saying_who_and_where() -> None:
    executor, seen = _loop(review_frequency=2)
    async with executor:
        handle = executor.start_agent_dag("count")
        await _answer_reviews(handle, [{"decision": "stop", "note": "good enough"}])
        report = await handle.wait()
    assert report.status == "cancelled"
    assert report.error == ("stopped by a person at the review before supervisor step 'supervisor_step_3' "
                            "(iteration 2): good enough")
    assert [iteration for iteration, _ in seen] == [0, 1]
    assert report.outcomes["supervisor_step_3"].status == "pending"


async def test_a_note_reaches_the_next_step_only() -> None:
    executor, seen = _loop(review_frequency=2)
    async with executor:
        handle = executor.start_agent_dag("count")
        await _answer_reviews(handle, [{"decision": "approve", "note": "focus on costs"}, {"decision": "approve"}])
        report = await handle.wait()
    assert report.success
    assert seen == [(0, None), (1, None), (2, "focus on costs"), (3, None), (4, None)]


async def test_an_answer_that_is_not_a_decision_is_refused_and_the_question_stays() -> None:
    executor, seen = _loop(review_frequency=4)
    async with executor:
        handle = executor.start_agent_dag("count")
        async for event in handle.subscribe():
            if isinstance(event, HumanInputRequested):
                with pytest.raises(SchemaValidationError):
                    handle.respond(event.request_id, {"decision": "maybe"})
                assert [q.request_id for q in handle.questions()] == [event.request_id]
                handle.respond(event.request_id, {"decision": "approve"})
        assert (await handle.wait()).success
    assert len(seen) == STEPS


async def test_timeout_on_autopilot_approves() -> None:
    executor, seen = _loop(review_frequency=2, human_wait_minutes=0.001)  # 60 ms: nobody answers
    async with executor:
        handle = executor.start_agent_dag("count")
        report = await handle.wait()
    assert report.status == "succeeded" and len(seen) == STEPS
    received = [e async for e in handle.subscribe() if isinstance(e, HumanInputReceived)]
    assert [(e.node, e.timed_out, e.value) for e in received] == [
        ("supervisor_step_3", True, {"decision": "approve"}),
        ("supervisor_step_5", True, {"decision": "approve"}),
    ]


async def test_timeout_on_pause_pauses_and_resume_asks_again() -> None:
    executor, seen = _loop(review_frequency=2, human_wait_minutes=0.001, human_timeout_action="pause")
    async with executor:
        handle = executor.start_agent_dag("count")
        report = await handle.wait()
        assert report.status == "paused"
        assert report.error is not None
        assert report.error.startswith("waiting for a person to answer: Review of 'count' after 2 supervisor steps")
        assert [iteration for iteration, _ in seen] == [0, 1]
        resumed = executor.start_resume(handle.run_id)
        asked = await _answer_reviews(resumed, [{"decision": "approve", "note": "go"}, {"decision": "approve"}])
        final = await resumed.wait()
    assert [event.node for event in asked] == ["supervisor_step_3", "supervisor_step_5"]
    assert final.status == "succeeded"
    assert seen == [(0, None), (1, None), (2, "go"), (3, None), (4, None)]


async def test_no_review_points_unless_review_frequency_is_set() -> None:
    executor, seen = _loop()
    async with executor:
        handle = executor.start_agent_dag("count")
        report = await handle.wait()
    assert report.success and len(seen) == STEPS
    assert not [e async for e in handle.subscribe() if isinstance(e, HumanInputRequested)]


async def test_a_stopped_run_resumes_from_the_reviewed_step_asking_again() -> None:
    executor, seen = _loop(review_frequency=2)
    async with executor:
        handle = executor.start_agent_dag("count")
        await _answer_reviews(handle, [{"decision": "stop"}])
        stopped = await handle.wait()
        assert stopped.status == "cancelled" and stopped.error is not None and "stopped by a person" in stopped.error
        resumed = executor.start_resume(handle.run_id)
        asked = await _answer_reviews(resumed, [{"decision": "approve"}, {"decision": "approve"}])
        final = await resumed.wait()
    assert final.status == "succeeded" and final.error is None
    assert [event.node for event in asked] == ["supervisor_step_3", "supervisor_step_5"]
    assert [iteration for iteration, _ in seen] == [0, 1, 2, 3, 4]
