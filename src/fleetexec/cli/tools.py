"""`fleetexec hosts`, `demo`, `last` and `agent stop`: the commands around `run`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from ..exceptions import FleetError

if TYPE_CHECKING:
    pass

from .common import (
    _FORMATS,
    EXIT_CODES_HELP,
    _fail,
    _notes,
    _options,
    _select,
    _selected_hosts,
    _selection_options,
    main,
)
from .run import _execute, _show


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("selection", nargs=-1)
@_selection_options
@click.option("-o", "--format", "output_format", default="table", show_default=True,
              type=click.Choice(["table", "json"]),
              help="json: every effective setting of each host and where it came from "
                   "(target, flag, inventory, ssh-config, default).")
def hosts(selection: tuple[str, ...], output_format: str, **opts: Any) -> None:
    """Print the selected hosts with their effective settings (never a secret)."""
    from ..render import render_hosts, render_hosts_json
    from ..resolve import explain

    if output_format == "json":
        try:
            options = _options(opts)
            notes: list[str] = []
            explained = explain(_select(opts["inventory"], [*selection, *opts["host_patterns"]],
                                        opts["groups"], opts["exclude"],
                                        opts["inventory_format"]), options, notes)
        except FleetError as error:
            _fail(str(error))
        _notes(notes)
        click.echo(render_hosts_json(explained, options))
        return
    chosen, _ = _selected_hosts(selection, opts)
    click.echo(render_hosts(chosen))
    click.echo(f"{len(chosen)} host{'s' if len(chosen) != 1 else ''}")


@main.command(epilog=EXIT_CODES_HELP)
@click.option("-n", "--hosts", "count", default=5, show_default=True,
              type=click.IntRange(1, 200), help="Mock hosts to start.")
@click.option("-o", "--format", "output_format", default="table", show_default=True,
              type=click.Choice(_FORMATS))
@click.argument("command", nargs=-1)
def demo(count: int, output_format: str, command: tuple[str, ...]) -> None:
    """Start a local mock fleet on loopback and run COMMAND on it [df -h /].

    Everything is real but the servers: fresh host and user keys, a generated
    inventory and known_hosts, strict host key checking, the worker pool and
    the renderers. The mock hosts answer from a script and run nothing on
    this machine. All of it is removed afterwards.
    """
    from ..inventory import load_inventory
    from ..options import Options
    from ..testing import MockFleet

    with MockFleet(count) as fleet:
        click.echo(f"# mock fleet: {count} hosts; inventory {fleet.inventory_path}:", err=True)
        with open(fleet.inventory_path, encoding="utf-8") as file:
            click.echo("".join(f"#   {line}" for line in file), nl=False, err=True)
        hosts = load_inventory(fleet.inventory_path).select()
        # The inventory names its known_hosts; the user's ssh config has no say on mock hosts.
        options = Options(system_known_hosts=False, use_ssh_config=False)
        result = _execute(hosts, " ".join(command) or "df -h /", options, None, output_format,
                          progress=False)
    sys.exit(result.exit_code)


@main.command(epilog="Exit status: 0 when shown, 2 when there is no saved run.")
@click.option("-o", "--format", "output_format", default="table", show_default=True,
              type=click.Choice([f for f in _FORMATS if f != "stream"]))
@click.option("--from", "path", type=click.Path(dir_okay=False), metavar="FILE",
              help="A saved run file instead of the last.")
def last(output_format: str, path: str | None) -> None:
    """Show the last run again, in any format.

    `fleetexec run` saves each run (unless --no-save) under
    $XDG_STATE_HOME/fleetexec/runs (default ~/.local/state/fleetexec/runs),
    keeping the newest 20; the run's own exit code is in -o json's summary.
    """
    from ..history import load, load_last
    from ..render import sanitize

    try:
        record = load(path) if path else load_last()
    except FleetError as error:
        _fail(str(error))
    click.echo(f"# {sanitize(record.describe(), single_line=True)}", err=True)
    _show(record.result, output_format)


@main.group()
def agent() -> None:
    """The background agent that `run --persist` starts to keep connections open."""


@agent.command("stop")
def agent_stop() -> None:
    """Close the agent's connections and stop it."""
    from ..agent import stop_agent

    try:
        stopped = stop_agent()
    except FleetError as error:
        _fail(str(error))
    click.echo("fleetexec agent stopped" if stopped else "no fleetexec agent is running")
