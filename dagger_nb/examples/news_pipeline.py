"""A small news pipeline on pub/sub: deterministic, offline, with schemas on every channel.

A source agent (``newsdesk``) turns a request into one message per topic on
``topics``; three researchers each publish a finding per topic on
``findings``; a collector keeps findings in the shared cache and publishes a
summary on ``summaries`` once it has all three for a topic.

Run it with ``python -m dagger_nb.examples.news_pipeline``.
"""

from __future__ import annotations

from typing import Any

import anyio

from dagger_nb.pubsub import Message, PubSub, PubSubAgentRegistry, PubSubContext, pubsub_agent

RESEARCHERS = {
    "historian": "how it started",
    "analyst": "what the numbers say",
    "forecaster": "what comes next",
}

REQUEST_SCHEMA = {
    "type": "object",
    "properties": {"topics": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}},
    "required": ["topics"],
    "additionalProperties": False,
}
TOPIC_SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string"}, "number": {"type": "integer", "minimum": 1}},
    "required": ["topic", "number"],
    "additionalProperties": False,
}
FINDING_SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string"},
        "researcher": {"enum": sorted(RESEARCHERS)},
        "finding": {"type": "string"},
    },
    "required": ["topic", "researcher", "finding"],
    "additionalProperties": False,
}
SUMMARY_SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string"},
        "summary": {"type": "string"},
        "sources": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 3},
    },
    "required": ["topic", "summary", "sources"],
    "additionalProperties": False,
}


def define_agents(registry: PubSubAgentRegistry) -> PubSubAgentRegistry:
    """Define the five agents of the pipeline in ``registry`` and return it."""

    @pubsub_agent(
        "newsdesk",
        subscribe=["requests"],
        publish=["topics"],
        output_schema=TOPIC_SCHEMA,
        description="splits a request into one message per topic",
        registry=registry,
    )
    async def newsdesk(message: Message, ctx: PubSubContext) -> None:
        for number, topic in enumerate(message.payload["topics"], start=1):
            await ctx.publish("topics", {"topic": topic, "number": number}, task_id=topic)

    for researcher, angle in RESEARCHERS.items():
        define_researcher(registry, researcher, angle)

    @pubsub_agent(
        "collector",
        subscribe=["findings"],
        publish=["summaries"],
        output_schema=SUMMARY_SCHEMA,
        description="publishes a summary once all three findings of a topic are in",
        registry=registry,
    )
    async def collector(message: Message, ctx: PubSubContext) -> None:
        topic = message.payload["topic"]
        findings = dict(ctx.cache.get("findings", topic, default={}))
        findings[message.payload["researcher"]] = message.payload["finding"]
        ctx.cache.insert("findings", topic, findings)
        if len(findings) == len(RESEARCHERS):
            summary = " ".join(findings[name] for name in sorted(findings))
            await ctx.publish(
                "summaries",
                {"topic": topic, "summary": summary, "sources": sorted(findings)},
                task_id=topic,
            )

    return registry


def define_researcher(registry: PubSubAgentRegistry, name: str, angle: str) -> None:
    """A researcher that answers every topic from its own ``angle`` (a stand-in for an LLM call)."""

    async def research(message: Message, ctx: PubSubContext) -> None:
        topic = message.payload["topic"]
        finding = f"{name.capitalize()} on {topic}: {angle}."
        await ctx.publish("findings", {"topic": topic, "researcher": name, "finding": finding}, task_id=topic)

    pubsub_agent(
        name,
        subscribe=["topics"],
        publish=["findings"],
        input_schema=TOPIC_SCHEMA,
        output_schema=FINDING_SCHEMA,
        description=f"researches {angle}",
        registry=registry,
    )(research)


def build(*, db: str | None = None) -> PubSub:
    """A bus with the pipeline's channels (and schemas) and its five agents registered."""
    registry = define_agents(PubSubAgentRegistry())
    bus = PubSub(db=db, registry=registry, strict=True)
    bus.create_channel("requests", schema=REQUEST_SCHEMA)
    bus.create_channel("topics", schema=TOPIC_SCHEMA)
    bus.create_channel("findings", schema=FINDING_SCHEMA)
    bus.create_channel("summaries", schema=SUMMARY_SCHEMA)
    for name in ["newsdesk", *RESEARCHERS, "collector"]:
        bus.register(name)
    return bus


async def run_pipeline(topics: list[str]) -> list[dict[str, Any]]:
    """Run the pipeline on ``topics`` until it is idle; return the summaries sorted by topic."""
    bus = build()
    await bus.publish("requests", {"topics": topics})
    await bus.run(until_idle=True)
    summaries = sorted(bus.history_frame("summaries")["payload"], key=lambda summary: summary["topic"])
    bus.close()
    return summaries


def main() -> None:
    """Run the pipeline on three topics and print each summary."""
    summaries = anyio.run(run_pipeline, ["batteries", "rivers", "chess engines"])
    for summary in summaries:
        print(f"{summary['topic']}: {summary['summary']}")


if __name__ == "__main__":
    main()
