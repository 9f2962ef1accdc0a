"""Pure functions from results to text, and the one terminal sanitiser.

Nothing here does I/O or knows about click; every function returns a string
without a trailing newline.

- `terminal`: `sanitize`, which everything meant for a terminal passes through;
- `text`: the table, gathered, diff, summary, progress and hosts views (the only
  module that imports tabulate);
- `machine`: JSON and JSON Lines (not sanitised; the schema is in its docstring);
- `live`: `LiveLines`, streamed output as whole `host: line` lines.
"""

from __future__ import annotations

from .live import LiveLines
from .machine import iter_json, render_json, render_jsonl_line, result_to_dict
from .machine import render_hosts_json as render_hosts_json
from .terminal import sanitize
from .text import (
    render_diff,
    render_gathered,
    render_hosts,
    render_progress_line,
    render_summary,
    render_table,
)

__all__ = [
    "LiveLines", "iter_json", "render_diff", "render_gathered", "render_hosts", "render_json",
    "render_jsonl_line", "render_progress_line", "render_summary", "render_table",
    "result_to_dict", "sanitize",
]
