"""The pub/sub names the package exports."""

from __future__ import annotations

import dagger_nb
import dagger_nb.pubsub


def test_pubsub_names_are_exported_from_the_package() -> None:
    for name in (
        "Message",
        "PubSub",
        "PubSubAgent",
        "PubSubAgentRegistry",
        "PubSubContext",
        "PubSubHandle",
        "default_pubsub_registry",
        "pubsub_agent",
        "PubSubError",
        "ChannelNotFound",
        "SchemaValidationError",
    ):
        assert name in dagger_nb.__all__, name
        assert getattr(dagger_nb, name) is not None
    assert dagger_nb.PubSub is dagger_nb.pubsub.PubSub
    assert dagger_nb.default_pubsub_registry is dagger_nb.pubsub.default_pubsub_registry


def test_subpackage_all_is_sorted_and_complete() -> None:
    assert dagger_nb.pubsub.__all__ == sorted(dagger_nb.pubsub.__all__)
    for name in dagger_nb.pubsub.__all__:
        assert getattr(dagger_nb.pubsub, name) is not None


def test_errors_sit_under_the_root() -> None:
    assert issubclass(dagger_nb.PubSubError, dagger_nb.DaggerError)
    assert issubclass(dagger_nb.PubSubError, ValueError)
