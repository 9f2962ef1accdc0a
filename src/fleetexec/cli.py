"""The `fleetexec` command: options → API call → renderer → exit code. Nothing else.

Heavy imports (the executor, paramiko in the workers) happen only inside the
commands that need them, so `fleetexec --help` and `fleetexec hosts` start fast.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NoReturn

import click

from .exceptions import FleetError, InventoryError
from .host import Host
from .results import EXIT_INTERRUPTED, EXIT_USAGE, FleetResult, HostResult

EXIT_CODES_HELP = """\b
Exit codes (the first that applies, in this order):
  130  interrupted (Ctrl-C or SIGTERM); finished hosts are still printed
    3  some host could not be reached, verified or authenticated,
       or the connection was lost (unreachable, auth_failed,
       hostkey_unknown, hostkey_changed, protocol_error,
       connection_lost, error)
    4  some host timed out (connect or command deadline)
    1  some command exited non-zero, was killed, or gave no exit status
    0  every host ran the command and it exited 0
    2  usage or inventory error: nothing ran
"""

_SIZE_SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class _RunCommand(click.Command):
    """Splits `SELECTION... -- COMMAND...` before click sees the arguments."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["fleetexec.command"] = args[cut + 1 :]
            args = args[:cut]
        else:
            ctx.meta["fleetexec.command"] = None
        return super().parse_args(ctx, args)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    from .render import sanitize

    click.echo(f"fleetexec: error: {sanitize(message, single_line=True)}", err=True)
    sys.exit(code)


def _size(value: str) -> int:
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    suffix = text[-1:] if text[-1:] in "KMG" else ""
    number = text[: len(text) - len(suffix)]
    if not number.isdigit():
        raise click.BadParameter(f"{value!r}: use bytes or a K/M/G suffix, e.g. 1M")
    return int(number) * _SIZE_SUFFIXES[suffix]


def _selection_options(function: Any) -> Any:
    for decorator in reversed([
        click.option("-i", "--inventory", type=click.Path(dir_okay=False),
                     envvar="FLEETEXEC_INVENTORY", help="YAML inventory file."),
        click.option("-H", "--hosts", "host_patterns", multiple=True, metavar="PATTERN",
                     help="Hosts, ranges, globs or groups, comma lists; without an inventory, "
                          "targets like user@web[01-20]:2222. Repeatable."),
        click.option("-g", "--group", "groups", multiple=True, help="Inventory group. Repeatable."),
        click.option("-x", "--exclude", multiple=True, metavar="PATTERN",
                     help="Leave these hosts or groups out. Repeatable."),
        click.option("-u", "--user", help="Log in as this user (overrides the inventory)."),
        click.option("-p", "--port", type=click.IntRange(1, 65535),
                     help="SSH port (overrides the inventory)."),
        click.option("-k", "--key", "keys", multiple=True, type=click.Path(dir_okay=False),
                     help="Private key file (overrides the inventory). Repeatable."),
        click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True),
                     help="Deadline for TCP connect + handshake + auth, seconds [10]."),
        click.option("-t", "--timeout", type=click.FloatRange(min=0),
                     help="Deadline for the command from exec, seconds; 0 = none [60]."),
    ]):
        function = decorator(function)
    return function


def _selected_hosts(selection: Sequence[str], opts: dict[str, Any]) -> list[Host]:
    """The hosts chosen by the selection options; a bad choice ends the program (exit 2)."""
    try:
        return _select(opts["inventory"], [*selection, *opts["host_patterns"]], opts["groups"],
                       opts["exclude"], opts["user"], opts["port"], opts["keys"],
                       opts["connect_timeout"], opts["timeout"])
    except InventoryError as error:
        _fail(str(error))


def _select(
    inventory: str | None, patterns: Sequence[str], groups: Sequence[str], exclude: Sequence[str],
    user: str | None, port: int | None, keys: Sequence[str], connect_timeout: float | None,
    timeout: float | None,
) -> list[Host]:
    """The hosts chosen on the command line, command-line settings applied on top."""
    from .inventory import hosts_from_targets, load_inventory

    terms = [*patterns, *groups, *(f"!{x}" for x in exclude)]
    if inventory:
        hosts = load_inventory(inventory).select(*terms)
    elif groups:
        raise InventoryError("--group needs an inventory (-i FILE or FLEETEXEC_INVENTORY)")
    elif patterns:
        hosts = hosts_from_targets(patterns)
        excluded = {h.name for h in hosts_from_targets(exclude)} if exclude else set()
        hosts = [h for h in hosts if h.name not in excluded]
    else:
        raise InventoryError("no hosts: give -i INVENTORY and/or -H HOSTS")
    if not hosts:
        raise InventoryError("the selection matches no hosts")
    overrides: dict[str, Any] = {}
    if user:
        overrides["user"] = user
    if port:
        overrides["port"] = port
    if keys:
        overrides["key_files"] = tuple(keys)
    if connect_timeout is not None:
        overrides["connect_timeout"] = connect_timeout
    if timeout is not None:
        overrides["command_timeout"] = timeout
    try:
        return [replace(h, **overrides) for h in hosts]
    except ValueError as error:
        raise InventoryError(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="fleetexec")
def main() -> None:
    """Run a command across a fleet of servers over SSH, in parallel, safely.

    \b
    fleetexec demo                                  # a local mock fleet, no servers needed
    fleetexec run -i inventory.yaml -g web -- df -h
    fleetexec run -H 'deploy@web[01-20]' -- uptime
    fleetexec hosts -i inventory.yaml 'db*,!db3'
    """


@main.command(cls=_RunCommand, epilog=EXIT_CODES_HELP)
@click.argument("selection", nargs=-1)
@_selection_options
@click.option("--known-hosts", multiple=True, type=click.Path(dir_okay=False),
              help="Extra known_hosts file (also where accept-new records). Repeatable.")
@click.option("--no-system-known-hosts", is_flag=True,
              help="Do not read ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts.")
@click.option("--host-key-policy", type=click.Choice(["strict", "accept-new"]), default="strict",
              show_default=True, help="accept-new records keys of new hosts; changed keys are "
              "always refused.")
@click.option("--require-strict-kex", is_flag=True,
              help="Refuse servers without strict key exchange (the Terrapin fix) before "
                   "any credential is sent.")
@click.option("-P", "--parallel", type=click.IntRange(min=1),
              help="Sessions in flight at most [1024, capped by the open-files limit].")
@click.option("--processes", type=click.IntRange(min=1), help="Worker processes [one per core].")
@click.option("-o", "--format", "output_format", default="table", show_default=True,
              type=click.Choice(["table", "gathered", "json", "jsonl"]))
@click.option("--max-output", default="1M", show_default=True, metavar="SIZE",
              help="Keep at most this much of each stream per host (rest counted, dropped).")
@click.option("-A", "--use-agent", is_flag=True, help="Also offer the ssh-agent's keys.")
@click.option("--ask-password", is_flag=True,
              help="Prompt once for a password (or set FLEETEXEC_PASSWORD).")
@click.option("--ask-passphrase", is_flag=True,
              help="Prompt once for the key passphrase (or set FLEETEXEC_PASSPHRASE).")
@click.option("--persist", is_flag=True,
              help="Keep connections open in a per-user background agent (like ssh's "
                   "ControlPersist), so the next --persist run skips the handshakes.")
@click.option("--persist-idle", default=600.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=1), help="The agent exits after this long unused.")
@click.option("--progress/--no-progress", default=None,
              help="A line per finished host on stderr [on when stderr is a terminal].")
@click.pass_context
def run(ctx: click.Context, /, selection: tuple[str, ...], **opts: Any) -> None:
    """Run COMMAND on the selected hosts: fleetexec run [SELECTION...] [OPTIONS] -- COMMAND

    SELECTION is hosts, groups, globs or ranges of the inventory (`!x` excludes).
    Without `--`, the arguments are the command and -H/-g select the hosts.
    """
    command_words = ctx.meta["fleetexec.command"]
    if command_words is None:
        command_words, selection = list(selection), ()
    if not command_words:
        raise click.UsageError("no command: put it after --, e.g. fleetexec run -H web1 -- uptime")
    try:
        max_output = _size(opts["max_output"])
    except click.BadParameter as error:
        raise click.UsageError(f"--max-output: {error.message}") from None
    hosts = _selected_hosts(selection, opts)
    password = os.environ.get("FLEETEXEC_PASSWORD")
    if opts["ask_password"]:
        password = click.prompt("SSH password", hide_input=True, err=True)
    passphrase = os.environ.get("FLEETEXEC_PASSPHRASE")
    if opts["ask_passphrase"]:
        passphrase = click.prompt("Key passphrase", hide_input=True, err=True)
    result = _execute(hosts, " ".join(command_words), opts, max_output, password, passphrase)
    sys.exit(result.exit_code)


def _execute(
    hosts: list[Host], command: str, opts: dict[str, Any], max_output: int,
    password: str | None, passphrase: str | None,
) -> FleetResult:
    from . import render
    from .api import run as run_fleet

    output_format = opts["output_format"]
    progress = opts["progress"]
    if progress is None:
        progress = sys.stderr.isatty() and output_format in ("table", "gathered")
    width = max(len(h.name) for h in hosts)
    done = [0]

    def on_result(result: HostResult) -> None:
        done[0] += 1
        if output_format == "jsonl":
            click.echo(render.render_jsonl_line(result))
        if progress:
            line = render.render_progress_line(result, host_width=width)
            click.echo(f"[{done[0]}/{len(hosts)}] {line}", err=True)

    # SIGTERM stops the run the way Ctrl-C does: partial results, no orphans.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    options = {
        "known_hosts": list(opts["known_hosts"]),
        "system_known_hosts": not opts["no_system_known_hosts"],
        "host_key_policy": opts["host_key_policy"], "parallel": opts["parallel"],
        "require_strict_kex": opts.get("require_strict_kex", False),
        "processes": opts["processes"], "max_output": max_output, "use_agent": opts["use_agent"],
        "password": password, "passphrase": passphrase,
    }
    try:
        if opts.get("persist"):
            from .agent import run_via_agent

            result = run_via_agent(hosts, command, idle=opts["persist_idle"], on_result=on_result,
                                   **options)
        else:
            result = run_fleet(hosts, command, on_result=on_result, **options)
    except FleetError as error:
        _fail(str(error))
    finally:
        from .executor import stop_forkserver

        stop_forkserver()
    if output_format == "table":
        click.echo(render.render_table(result))
        click.echo(render.render_summary(result))
    elif output_format == "gathered":
        click.echo(render.render_gathered(result))
        click.echo(render.render_summary(result))
    elif output_format == "json":
        for piece in render.iter_json(result):
            click.echo(piece, nl=False)
        click.echo()
    else:
        click.echo(render.render_summary(result), err=True)
    return result


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("selection", nargs=-1)
@_selection_options
def hosts(selection: tuple[str, ...], **opts: Any) -> None:
    """Print the selected hosts with their effective settings (never a secret)."""
    from .render import render_hosts

    chosen = _selected_hosts(selection, opts)
    click.echo(render_hosts(chosen))
    click.echo(f"{len(chosen)} host{'s' if len(chosen) != 1 else ''}")


@main.command(epilog=EXIT_CODES_HELP)
@click.option("-n", "--hosts", "count", default=5, show_default=True,
              type=click.IntRange(1, 200), help="Mock hosts to start.")
@click.option("-o", "--format", "output_format", default="table", show_default=True,
              type=click.Choice(["table", "gathered", "json", "jsonl"]))
@click.argument("command", nargs=-1)
def demo(count: int, output_format: str, command: tuple[str, ...]) -> None:
    """Start a local mock fleet on loopback and run COMMAND on it [df -h].

    Everything is real but the servers: fresh host and user keys, a generated
    inventory and known_hosts, strict host key checking, the worker pool and
    the renderers. The mock hosts answer from a script and run nothing on
    this machine. All of it is removed afterwards.
    """
    from .inventory import load_inventory
    from .testing import MockFleet

    with MockFleet(count) as fleet:
        click.echo(f"# mock fleet: {count} hosts; inventory {fleet.inventory_path}:", err=True)
        with open(fleet.inventory_path, encoding="utf-8") as file:
            click.echo("".join(f"#   {line}" for line in file), nl=False, err=True)
        hosts = load_inventory(fleet.inventory_path).select()
        opts = {"output_format": output_format, "progress": False, "known_hosts": (),
                "no_system_known_hosts": True, "host_key_policy": "strict", "parallel": None,
                "processes": None, "use_agent": False}
        result = _execute(hosts, " ".join(command) or "df -h", opts, 1024 * 1024, None, None)
    sys.exit(result.exit_code)


@main.group()
def agent() -> None:
    """The background agent that `run --persist` starts to keep connections open."""


@agent.command("stop")
def agent_stop() -> None:
    """Close the agent's connections and stop it."""
    from .agent import stop_agent

    try:
        stopped = stop_agent()
    except FleetError as error:
        _fail(str(error))
    click.echo("fleetexec agent stopped" if stopped else "no fleetexec agent is running")


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
