"""The `fleetexec` command: options → API call → renderer → exit code. Nothing else.

`common` holds the flags and selection every command shares; `run`, `files` and
`tools` the commands; `console` what a run shows while it goes on. This package
is the only place that imports click. Heavy imports (the engine, paramiko in the
workers) happen only inside the commands that need them, so `fleetexec --help`
and `fleetexec hosts` start fast.
"""

from __future__ import annotations

import sys

import click

from ..results import EXIT_INTERRUPTED
from . import files, run, tools  # noqa: F401 - each registers its commands on `main`
from .common import main

__all__ = ["entry", "main"]


def entry() -> None:
    """Console entry point: click's handling, except that Ctrl-C exits 130 (click says 1)."""
    try:
        code = main.main(standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("fleetexec: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
