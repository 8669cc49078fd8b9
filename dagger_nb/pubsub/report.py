"""How one delivery ended: :class:`PubSubReport`, and the counters a bus keeps while it delivers.

``await bus.run()``, ``bus.run_sync()`` and ``await handle`` all return the
report of the delivery they ran; it counts only what happened during that
delivery (between its ``DeliveryStarted`` and ``DeliveryStopped`` events).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from time import time

__all__ = ["PubSubReport", "PubSubStatus"]


class PubSubStatus(StrEnum):
    """Where a delivery stands; members compare equal to their string values."""

    RUNNING = "running"
    #: ended by ``stop()``, its timeout, or idleness (``until_idle=True``)
    STOPPED = "stopped"
    #: its task was cancelled (the enclosing scope, or the bus's background owner closing)
    CANCELLED = "cancelled"
    #: delivery itself broke (a write to the ``db=`` log failed); the report's ``error`` says why
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PubSubReport:
    """The outcome of one delivery (one ``run()``, ``run_sync()`` or ``start()``).

    ``reason`` is how it ended: ``idle``, ``stopped``, ``timeout``, ``cancelled`` or
    ``failed``. ``published`` counts messages accepted during the delivery
    (``channels``: per channel); ``delivered`` counts handler calls that ended
    (as :meth:`PubSub.agents`' ``delivered`` column: a call that raised counts),
    ``failed`` those that raised, ``dead_lettered`` the failed calls plus the
    messages an agent's input schema rejected. ``error`` is the exception that
    ended a ``failed`` delivery, else None. A failing handler never fails the
    delivery: it only adds to ``failed`` and ``dead_lettered``.
    """

    status: PubSubStatus
    reason: str
    published: int = 0
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    channels: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None
    started_at: float | None = None
    finished_at: float | None = None

    def __repr__(self) -> str:
        ending = f" ({self.error!r})" if self.error is not None else ""
        return (
            f"<PubSubReport {self.status} ({self.reason}): {self.published} published, {self.delivered} "
            f"delivered, {self.failed} failed, {self.dead_lettered} dead-lettered{ending}>"
        )


class Tally:
    """Counts what one delivery does; the bus adds to it, :meth:`report` freezes it."""

    __slots__ = ("channels", "dead_lettered", "delivered", "failed", "published", "started_at")

    def __init__(self) -> None:
        self.published = self.delivered = self.failed = self.dead_lettered = 0
        self.channels: dict[str, int] = {}
        self.started_at: float | None = None

    def start(self) -> None:
        """Delivery begins now (the bus counts into this tally from here on)."""
        self.started_at = time()

    def publish(self, channel: str) -> None:
        """A message was accepted on ``channel``."""
        self.published += 1
        self.channels[channel] = self.channels.get(channel, 0) + 1

    def outcome(self, kind: str) -> None:
        """A handler call ended (``delivered``), raised (``failed``), or a message was ``rejected``."""
        if kind == "delivered":
            self.delivered += 1
        else:
            self.dead_lettered += 1
            if kind == "failed":
                self.failed += 1

    def report(self, reason: str, error: BaseException | None = None) -> PubSubReport:
        """The report of a delivery that ended for ``reason`` (``error``: what broke it)."""
        if error is not None:
            status = PubSubStatus.FAILED
        elif reason == "cancelled":
            status = PubSubStatus.CANCELLED
        else:
            status = PubSubStatus.STOPPED
        return PubSubReport(
            status, reason, self.published, self.delivered, self.failed, self.dead_lettered,
            dict(self.channels), error, self.started_at, time(),
        )
