"""Redraw at a fixed rate however fast events arrive (like rich's ``Live``).

Each event only marks the view dirty (O(1)); the drawing happens at most once
per ``interval`` seconds, from a timer on the event loop that emitted the
event (the kernel's loop, or the private loop of a blocking wait).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Throttle:
    """Calls ``draw()`` at most once per ``interval`` seconds after :meth:`poke`.

    :meth:`flush` draws at once (the final state when a run ends). ``redraws``
    counts the calls to ``draw``.
    """

    def __init__(
        self,
        draw: Callable[[], object],
        *,
        interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.redraws = 0
        self.dirty = False
        self._draw = draw
        self._clock = clock
        self._last = -float("inf")
        self._timer: asyncio.TimerHandle | None = None

    def poke(self) -> None:
        """Something changed: draw now if the last draw is old enough, else within ``interval``."""
        self.dirty = True
        if self._timer is not None:
            return
        wait = self._last + self.interval - self._clock()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a plain thread): draw when allowed, flush() does the rest
            if wait <= 0:
                self.flush()
            return
        self._timer = loop.call_later(max(wait, 0.0), self._fire)

    @property
    def pending(self) -> bool:
        """True while a draw is scheduled."""
        return self._timer is not None

    def flush(self) -> None:
        """Draw now (if anything changed since the last draw) and cancel a pending timer."""
        self.cancel()
        if self.dirty:
            self.dirty = False
            self._last = self._clock()
            self.redraws += 1
            self._draw()

    def cancel(self) -> None:
        """Forget a pending draw."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        self.flush()
