"""Per-node logs: what an action prints or logs, kept with the node that produced it.

A context variable names the buffer of the node (or task) being run; it follows
the action into the tasks it starts and into the worker thread of a sync
action (anyio copies the context). Two taps read it:

- ``sys.stdout`` and ``sys.stderr`` are wrapped once (on the first capture) in
  a tee that still writes everything where it went before (the cell's output)
  and also adds each complete line to the current buffer, if any;
- a log-record factory adds each log record that a logger lets through to the
  current buffer (handlers still get every record, so logging reaches the cell
  as today; what a handler writes to a wrapped stream is not added a second time).

Buffers are bounded: the latest ``max_lines`` lines of at most ``max_chars``
characters, after a first line counting the earlier ones dropped.

>>> buffer = LogBuffer()
>>> with capture_into(buffer):
...     print("hello from a node")
hello from a node
>>> buffer.lines
['hello from a node']
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

from dagger_nb._traceback import printable

#: Lines kept per node by default.
MAX_LINES = 200
#: Characters kept per line by default.
MAX_CHARS = 1000


class LogBuffer:
    """The bounded log lines of one node: the latest ``max_lines``, after a first line saying how
    many earlier ones were dropped (``dropped`` counts them)."""

    __slots__ = ("_partial", "dropped", "lines", "max_chars", "max_lines")

    def __init__(self, *, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS) -> None:
        self.lines: list[str] = []
        self.max_lines = max(1, max_lines)
        self.max_chars = max_chars
        self.dropped = 0
        self._partial: dict[str, str] | None = None  # made on the first unfinished line: most nodes print nothing

    def add_line(self, line: str) -> None:
        """Keep ``line`` (surrogates escaped, cut to ``max_chars``); past ``max_lines`` the oldest
        line goes and the first line says how many went."""
        if not line.isascii():
            line = printable(line)
        if len(line) > self.max_chars:
            line = line[: self.max_chars - 1] + "…"
        lines = self.lines
        # The latest lines are the ones a live panel needs. ``lines`` stays one list (the outcome
        # shows it while the node runs), short enough that dropping its oldest line is cheap.
        if self.dropped:
            del lines[1]
        elif len(lines) < self.max_lines:
            lines.append(line)
            return
        self.dropped += 1
        lines[0] = f"… {self.dropped:,} earlier lines not kept"
        lines.append(line)

    def write(self, stream: str, text: str) -> None:
        """Add ``text`` written to ``stream`` (``stdout``/``stderr``), one line at a time; a line
        redrawn with ``\\r`` (a progress bar) keeps its last state only."""
        partial = self._partial
        before = partial.pop(stream, "") if partial else ""
        if "\n" in text:
            first, *middle, rest = text.split("\n")
            self.add_line(_last_state(before + first))
            for line in middle:
                self.add_line(_last_state(line))
        else:
            rest = before + text
        # An unfinished line is kept no longer than a line is, so each write costs its own length.
        rest = _last_state(rest)[: self.max_chars + 1]
        if rest:
            if self._partial is None:
                self._partial = {}
            self._partial[stream] = rest

    def close(self) -> None:
        """Keep the unfinished lines too."""
        if self._partial:
            for rest in self._partial.values():
                self.add_line(rest)
            self._partial.clear()


def _last_state(line: str) -> str:
    """What a terminal would show of ``line``, roughly: its last non-empty ``\\r``-separated part."""
    if "\r" not in line:
        return line
    return next((part for part in reversed(line.split("\r")) if part), "")


_making_lock = threading.Lock()


class LazyLogBuffer:
    """A :class:`LogBuffer` made on the first line written to it, for work that mostly prints
    nothing (a task agent's attempt, a DAG node): until then it is one small object.

    ``shown_on``: an object whose ``logs`` becomes the buffer's live list of lines once it is
    made (a node's outcome, which a dashboard reads while the node runs).
    """

    __slots__ = ("_buffer", "_shown_on")
    _buffer: LogBuffer

    def __init__(self, shown_on: Any = None) -> None:
        self._shown_on = shown_on

    def _made(self) -> LogBuffer:
        try:
            return self._buffer
        except AttributeError:
            with _making_lock:  # two threads of one node (copied contexts) may print their first line at once
                try:
                    return self._buffer
                except AttributeError:
                    self._buffer = buffer = LogBuffer()
                    if self._shown_on is not None:
                        self._shown_on.logs = buffer.lines
                    return buffer

    def write(self, stream: str, text: str) -> None:
        """As :meth:`LogBuffer.write`."""
        self._made().write(stream, text)

    def add_line(self, line: str) -> None:
        """As :meth:`LogBuffer.add_line`."""
        self._made().add_line(line)

    def take(self) -> list[str] | None:
        """The lines written so far, unfinished ones included; None when nothing was written."""
        buffer: LogBuffer | None = getattr(self, "_buffer", None)
        if buffer is None:
            return None
        buffer.close()
        return buffer.lines

    @property
    def _partial(self) -> dict[str, str] | None:
        buffer: LogBuffer | None = getattr(self, "_buffer", None)
        return None if buffer is None else buffer._partial

    def close(self) -> None:
        """As :meth:`LogBuffer.close` (nothing to do when nothing was written)."""
        self.take()


_current: contextvars.ContextVar[LogBuffer | LazyLogBuffer | None] = contextvars.ContextVar(
    "dagger_nb_log_buffer", default=None
)
_install_lock = threading.Lock()
_factory_installed = False
_in_log_handlers = threading.local()  # ``active`` while this thread's logging handlers run


class _Tee:
    """Writes through to ``stream`` and adds the text to the current node's buffer."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream = stream
        self._name = name

    def write(self, text: str) -> int:
        buffer = _current.get()
        if buffer is not None and isinstance(text, str) and not getattr(_in_log_handlers, "active", False):
            buffer.write(self._name, text)
        return self._stream.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _install() -> None:
    global _factory_installed
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _Tee):
                setattr(sys, name, _Tee(stream, name))
        if not _factory_installed:
            previous = logging.getLogRecordFactory()

            def record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                buffer = _current.get()
                if buffer is not None:
                    with contextlib.suppress(Exception):  # a bad format string must not break the caller
                        buffer.add_line(f"{record.levelname}:{record.name}: {record.getMessage()}")
                return record

            logging.setLogRecordFactory(record_factory)
            call_handlers = logging.Logger.callHandlers

            def call_handlers_uncaptured(self: logging.Logger, record: logging.LogRecord) -> None:
                # The factory has added the record already; what a handler writes to a captured
                # stream (Python's lastResort, a StreamHandler) is the same record again.
                if getattr(_in_log_handlers, "active", False):
                    call_handlers(self, record)
                    return
                _in_log_handlers.active = True
                try:
                    call_handlers(self, record)
                finally:
                    _in_log_handlers.active = False

            setattr(logging.Logger, "callHandlers", call_handlers_uncaptured)  # noqa: B010
            _factory_installed = True


def _route(buffer: LogBuffer | LazyLogBuffer) -> contextvars.Token[LogBuffer | LazyLogBuffer | None]:
    """Install the tees and the log hook if needed, then send this context's output to ``buffer``."""
    if sys.stdout.__class__ is not _Tee or sys.stderr.__class__ is not _Tee or not _factory_installed:
        _install()
    return _current.set(buffer)


def start_capture(buffer: LogBuffer | LazyLogBuffer) -> contextvars.Token[LogBuffer | LazyLogBuffer | None]:
    """Route prints and log records of the current context to ``buffer`` until :func:`stop_capture`."""
    return _route(buffer)


def stop_capture(token: contextvars.Token[LogBuffer | LazyLogBuffer | None]) -> None:
    """Undo :func:`start_capture` and keep the buffer's unfinished lines."""
    buffer = _current.get()
    _current.reset(token)
    if buffer is not None and buffer._partial:
        buffer.close()


def route_logs(logs: LazyLogBuffer) -> contextvars.Token[LogBuffer | LazyLogBuffer | None]:
    """Route prints and log records of the current context to ``logs`` until :func:`unroute_logs`
    (the lines stay in ``logs`` until its :meth:`~LazyLogBuffer.take`)."""
    return _route(logs)


def unroute_logs(token: contextvars.Token[LogBuffer | LazyLogBuffer | None]) -> None:
    """Undo :func:`route_logs`."""
    _current.reset(token)


@contextlib.contextmanager
def capture_into(buffer: LogBuffer) -> Iterator[LogBuffer]:
    """``with capture_into(buffer):`` prints and log records inside go to ``buffer`` too."""
    token = start_capture(buffer)
    try:
        yield buffer
    finally:
        stop_capture(token)
