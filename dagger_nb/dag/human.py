"""Questions a run asks a person: an action's (``await ctx.ask_human(...)``) and the review points
of a supervisor loop (every ``config.review_frequency`` steps)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from time import time
from typing import TYPE_CHECKING, Any

import anyio

from dagger_nb.schema import CompiledSchema

if TYPE_CHECKING:
    from dagger_nb.dag.executor import DagExecutor
    from dagger_nb.dag.run import Run
    from dagger_nb.dag.spec import NodeSpec


@dataclass(slots=True)
class HumanRequest:
    """One open question: what was asked, by which node, and the schema an answer must match."""

    run_id: str
    node: str
    prompt: str
    schema: dict[str, Any] | None
    default: Any
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    asked_at: float = field(default_factory=time)
    compiled: CompiledSchema | None = field(default=None, repr=False)
    answered: anyio.Event = field(default_factory=anyio.Event, repr=False)
    value: Any = None

    def answer(self, value: Any) -> None:
        """Check ``value`` against the schema (raising :class:`SchemaValidationError`) and hand it over."""
        if self.compiled is not None:
            self.compiled.validate(value)
        self.value = value
        self.answered.set()


class PauseForHuman(Exception):
    """Nobody answered in time and ``human_timeout_action`` is ``pause``."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        super().__init__(prompt)


#: The answer a review point takes: go on or stop, and an optional note for the next supervisor step.
REVIEW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decision": {"enum": ["approve", "stop"], "description": "approve: go on; stop: end the run"},
        "note": {"type": "string", "description": "passed to the next step as review_note"},
    },
    "required": ["decision"],
    "additionalProperties": False,
}
#: What a review point gets when nobody answers in time and ``human_timeout_action`` is ``autopilot``.
REVIEW_DEFAULT: dict[str, Any] = {"decision": "approve"}
#: How many nodes the summary of a review point lists (the latest ones).
SUMMARY_NODES = 20


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    """What a person decided at a review point: ``go_on``, and the ``note`` for the next step."""

    go_on: bool
    note: str | None = None


def review_due(iteration: int, frequency: int | None) -> bool:
    """Whether the supervisor step with ``iteration`` (0, 1, ...) waits for a review first:
    after every ``frequency`` steps (never before the first step, never when ``frequency`` is None)."""
    return frequency is not None and iteration > 0 and iteration % frequency == 0


def review_prompt(run: Run, iteration: int) -> str:
    """The question of a review point: how many steps ran, then the latest nodes with their results."""
    lines = [
        f"Review of '{run.spec.name}' after {iteration} supervisor step{'' if iteration == 1 else 's'}: "
        "approve to go on, stop to end the run; a note goes to the next step."
    ]
    outcomes = [o for o in run.outcomes.values() if o.status != "pending"]
    if len(outcomes) > SUMMARY_NODES:
        lines.append(f"({len(outcomes) - SUMMARY_NODES} earlier nodes not shown)")
    for outcome in outcomes[-SUMMARY_NODES:]:
        line = f"- {outcome.node} ({outcome.action}): {outcome.status}"
        if outcome.status in ("succeeded", "cached"):
            result = run.cache.get(outcome.node, "result", None)
            if result is not None:
                line += f": {_preview(result)}"
        elif outcome.error:
            line += f": {_preview(outcome.error)}"
        lines.append(line)
    return "\n".join(lines)


async def review_point(executor: DagExecutor, run: Run, node: NodeSpec, iteration: int) -> ReviewDecision:
    """Ask a person to review the run before supervisor step ``node`` runs (``ctx.ask_human``'s
    machinery: ``human_wait_minutes``, ``human_timeout_action``).

    ``approve`` (with an optional ``note``, passed to the step as ``review_note``) lets the step
    run; ``stop`` cancels the run, saying so in its error. Without an answer in time,
    ``autopilot`` approves, so the step goes on, and ``pause`` pauses the run: the step does not
    run now, and the review is asked again on resume.
    """
    prompt = review_prompt(run, iteration)
    try:
        answer = await executor._ask_human(run, node.id, prompt, schema=REVIEW_SCHEMA, timeout=None,
                                           default=REVIEW_DEFAULT)
    except PauseForHuman as pause:
        run.waiting_for_human = pause.prompt.splitlines()[0]
        run.stopping = True
        return ReviewDecision(go_on=False)
    answer = answer if isinstance(answer, dict) else REVIEW_DEFAULT
    note = answer.get("note") or None
    if answer.get("decision") == "stop":
        reason = f"stopped by a person at the review before supervisor step '{node.id}' (iteration {iteration})"
        run.cancel(reason=f"{reason}: {note}" if note else reason)
        return ReviewDecision(go_on=False, note=note)
    return ReviewDecision(go_on=True, note=note)


def _preview(value: Any, limit: int = 100) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
