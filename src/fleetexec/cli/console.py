"""What the CLI shows while a run goes on: live output lines, a progress bar, per-host lines.

Part of the CLI layer (it uses click's progress bar). Everything remote passes
through `render`'s sanitiser; this module only decides when and where to write.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import click

from ..backends import Output
from ..host import Host
from ..render import LiveLines, render_jsonl_line, render_progress_line
from ..results import HostResult, Status

__all__ = ["Console"]

_BAR_AFTER = 1.0  # seconds: a quick run never shows a bar
_TICK = 0.5


class Console:
    """The callbacks of one CLI run: `on_output`, `on_result`, then `close`.

    `progress`: None = a bar when stderr is a terminal (not with `-o stream`,
    whose lines are the progress), True = a bar on a terminal or else a line
    per finished host, False = nothing. `quiet` silences it all.
    """

    def __init__(self, hosts: Sequence[Host], output_format: str, progress: bool | None,
                 quiet: bool) -> None:
        self.names = [h.name for h in hosts]
        self.format = output_format
        width = max((len(n) for n in self.names), default=0)
        self.width = width
        terminal = sys.stderr.isatty()
        if quiet:
            progress = False
        elif progress is None:
            progress = terminal and output_format in ("table", "gathered", "diff")
        self.bar_wanted = bool(progress) and terminal
        self.lines_wanted = bool(progress) and not terminal
        self.live = None
        if output_format == "stream":
            colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
            self.live = LiveLines(width, colour)
        self.begin = time.monotonic()
        self.counts: Counter[Status] = Counter()
        self.pending = dict.fromkeys(self.names)
        self._lock = threading.Lock()
        self._bar: Any = None
        self._stop = threading.Event()
        if self.bar_wanted:
            threading.Thread(target=self._tick, daemon=True).start()

    def on_output(self, output: Output) -> None:
        """Live output: whole lines, as they arrive."""
        if self.live is not None:
            for line in self.live.feed(output.host, output.stream, output.data):
                click.echo(line)

    def on_result(self, result: HostResult) -> None:
        """A host finished."""
        if self.live is not None:
            for line in self.live.flush(result.host):
                click.echo(line)
        if self.format == "jsonl":
            click.echo(render_jsonl_line(result), color=True)  # ASCII: nothing to strip
        with self._lock:
            self.counts[result.status] += 1
            self.pending.pop(result.host, None)
            done = sum(self.counts.values())
            if self.lines_wanted:
                line = render_progress_line(result, host_width=self.width)
                click.echo(f"[{done}/{len(self.names)}] {line}", err=True)
            if self._bar is not None:
                self._bar.update(1, self._status())

    def close(self) -> None:
        """Take the bar off the screen before the final report."""
        self._stop.set()
        with self._lock:
            if self._bar is not None:
                self._bar.render_finish()
                self._bar = None

    def _tick(self) -> None:
        # Elapsed time and the estimate move even while no host finishes.
        while not self._stop.wait(_TICK):
            with self._lock:
                if self._bar is None and time.monotonic() - self.begin >= _BAR_AFTER:
                    self._bar = click.progressbar(
                        length=len(self.names), file=sys.stderr, show_eta=True,
                        show_pos=True, show_percent=False, item_show_func=lambda text: text)
                    self._bar.update(sum(self.counts.values()), self._status())
                elif self._bar is not None:
                    self._bar.update(0, self._status())

    def _status(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(
            self.counts.items(), key=lambda item: list(Status).index(item[0])))
        elapsed = f"{time.monotonic() - self.begin:.0f}s"
        waiting = list(self.pending)[:3]
        more = "…" if len(self.pending) > 3 else ""
        slowest = f" · waiting for {', '.join(waiting)}{more}" if waiting else ""
        return f"{counts or 'started'} · {elapsed}{slowest}"
