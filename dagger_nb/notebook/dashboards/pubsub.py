"""The live monitor of a pub/sub bus (:class:`PubSubMonitor`): messages, agents, graph, dead letters."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from dagger_nb.export import errors_list_html, legend_html, one_line, short_id
from dagger_nb.notebook.dashboards._base import Dashboard, escape, header_html, table_html

if TYPE_CHECKING:
    from dagger_nb.pubsub import PubSub, PubSubHandle

_BUS_EDGES = (("solid", "channel → subscriber"), ("dashed", "agent publishes → channel"))
#: Lines of each pub/sub agent's latest output shown in the monitor's agent panel.
_BUS_LOG_LINES = 20


class PubSubMonitor(Dashboard):
    """A live view of a pub/sub bus: header, recent messages, per-agent panel, graph, errors, Stop.

    Each event costs O(1) (a bounded buffer of the last ``table_rows`` messages);
    the panels are redrawn at most 4 times a second and at once when delivery stops.
    """

    def __init__(self, pubsub: PubSub, *, handle: PubSubHandle | None = None, **options: Any) -> None:
        super().__init__(agent_panel=True, progress=False, **options)
        self.cancel_button.description = "Stop"
        self.pubsub = pubsub
        self.handle = handle if handle is not None else pubsub.handle
        self.add_class("dagger-pubsub-monitor")
        self._recent: deque[tuple[str, str, str, str]] = deque(maxlen=self.table_rows)
        self._payloads: dict[str, str] = {}
        self._last: dict[str, str] = {}
        self._problems: deque[tuple[str, str, str | None]] = deque(maxlen=50)
        self._messages = 0
        for event in pubsub.events.history:  # what happened before the monitor was shown
            self._note(event)
        # The bus keeps only a window of its events: its channels count every message.
        self._messages = int(pubsub.channels_frame()["messages"].sum())
        pubsub.events.add_listener(self._on_event)
        self.refresh()
        if self.running:
            self.start_clock()
        else:
            self.finish()

    def _on_event(self, event: object) -> None:
        self._note(event)
        kind = type(event).__name__
        if kind == "DeliveryStopped":
            self.finish()
        elif kind == "DeliveryStarted" and self.finished:
            self.resume()
            self.refresh()
        else:
            self.changed()

    @property
    def running(self) -> bool:
        """True while the bus delivers, or its background delivery is starting."""
        handle = self.handle
        return self.pubsub.running or (handle is not None and not handle.done and not self.finished)

    def _note(self, event: Any) -> None:
        kind = type(event).__name__
        if kind == "MessagePublished":
            message = event.message
            self._messages += 1
            text = one_line(message.payload)
            self._recent.appendleft((short_id(message.message_id), message.channel, str(message.source or ""), text))
            self._payloads[message.message_id] = text
            if len(self._payloads) > 4 * self.table_rows:
                self._payloads.pop(next(iter(self._payloads)))
        elif kind == "MessageDelivered":
            shown = self._payloads.get(event.message_id)
            if shown is None:
                shown = one_line(event.message_id)
            self._last[event.node_id] = f"#{event.channel}: {shown}"
        elif kind in ("HandlerFailed", "MessageRejected"):
            stack: str | None = getattr(event, "traceback", None)
            logs = getattr(event, "logs", None)
            if logs:  # what the failed call printed, folded with its stack
                stack = f"{stack or ''}\n\nprinted or logged:\n" + "\n".join(logs[-_BUS_LOG_LINES:])
            self._problems.append((f"{event.node_id} on #{event.channel}", event.reason, stack))

    def cancel(self) -> None:
        """Stop delivery."""
        self.pubsub.stop()

    async def wait(self) -> None:
        """Wait for delivery to end (``handle=`` needed) and re-send the final state from this cell."""
        if self.handle is not None:
            await self.handle.wait()
        self.refresh()
        self.send_final_state()

    def draw(self, *, final: bool) -> None:
        """Rebuild the panels from the bus's state."""
        agents = self.pubsub.agents_frame()
        running = self.running
        status = "running" if running else "stopped"
        counts = {"messages": self._messages, "agents": len(agents), "dead letters": len(self._problems)}
        self.header.value = header_html("pub/sub", status, counts, None)
        self.table.value = table_html(("message", "channel", "source", "payload"), list(self._recent),
                                      status_column=-1, more=0)
        records: list[dict[Any, Any]] = agents.to_dict("records")
        rows = [
            (r["node_id"], r["status"], r["queued"], r["delivered"], r["failed"] + r["rejected"],
             self._last.get(r["node_id"], ""))
            for r in records
        ]
        assert self.agent_panel is not None
        self.agent_panel.value = table_html(("agent", "state", "queued", "handled", "failed", "last message"),
                                            rows, status_column=1, more=0) + _agent_logs_html(records)
        self.errors.value = errors_list_html(list(self._problems))
        self.graph.update(self.pubsub.to_dot, len(agents), final=final or not running,
                          version=(self.events_seen, len(agents)))
        self.legend.value = legend_html((), edges=_BUS_EDGES)
        self.cancel_button.disabled = not running


def _agent_logs_html(records: list[dict[Any, Any]]) -> str:
    """The latest lines each pub/sub agent's handler printed or logged, folded per agent; escaped."""
    items = []
    for record in records:
        lines = record.get("last_logs") or []
        if not lines:
            continue
        tail = lines[-_BUS_LOG_LINES:]
        items.append(
            f"<details class='dagger-agent-logs'><summary>{escape(str(record['node_id']))} "
            f"<span style='color:#666'>(latest {len(tail)} lines)</span></summary>"
            f"<pre style='font-size:11px;white-space:pre-wrap;margin:2px 0 6px 0'>{escape(chr(10).join(tail))}</pre>"
            f"</details>"
        )
    return f"<div><b>Logs</b>{''.join(items)}</div>" if items else ""


__all__ = ["PubSubMonitor"]
