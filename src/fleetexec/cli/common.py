"""What every command shares: the flags (one per `Options` field), selection, errors.

The one place that turns click's parameters into an `Options` and resolved hosts, and
a user's mistake into one line on stderr and exit 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ..exceptions import FleetError, InventoryError
from ..host import Host
from ..results import EXIT_USAGE

if TYPE_CHECKING:
    from ..options import Options



EXIT_CODES_HELP = """\b
Exit codes (the first that applies, in this order):
  130  interrupted (Ctrl-C or SIGTERM); finished hosts are still printed
    3  some host could not be reached, verified or authenticated,
       or the connection was lost (unreachable, auth_failed,
       hostkey_unknown, hostkey_changed, protocol_error,
       connection_lost, error); with --sudo, sudo refusing to
       run the command (wrong or missing sudo password) is
       auth_failed too
    4  some host timed out (connect or command deadline)
    1  some command exited non-zero, was killed, or gave no exit status
    0  every host ran the command and it exited 0
       (skipped hosts never decide the code)
    2  usage or inventory error: nothing ran
"""


_SIZE_SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    from ..render import sanitize

    click.echo(f"fleetexec: error: {sanitize(message, single_line=True)}", err=True)
    sys.exit(code)


class _Size(click.ParamType):  # type: ignore[type-arg]
    """Bytes, with an optional K/M/G suffix (`1M`)."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
        suffix = text[-1:] if text[-1:] in "KMG" else ""
        number = text[: len(text) - len(suffix)]
        if not number.isdigit():
            self.fail(f"{value!r}: use bytes or a K/M/G suffix, e.g. 1M", param, ctx)
        return int(number) * _SIZE_SUFFIXES[suffix]


class _CountOrPercent(click.ParamType):  # type: ignore[type-arg]
    """`5` or `20%`."""

    name = "N|N%"

    def __init__(self, minimum: int) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int | str:
        text = str(value).strip()
        if text.endswith("%"):
            return text
        if not text.isdigit() or int(text) < self.minimum:
            self.fail(f"{value!r}: use a count >= {self.minimum} or a percentage like 20%",
                      param, ctx)
        return int(text)


def _help(field: str) -> str:
    from ..options import Options

    meta = Options.__dataclass_fields__[field].metadata
    default = meta["builtin"]
    return str(meta["help"]) + (f" [{default}]" if default is not None else "")


_HOST_FLAGS = [
    click.option("-u", "--user", help=_help("user") + " Beats the inventory."),
    click.option("-p", "--port", type=click.IntRange(1, 65535), help=_help("port")),
    click.option("-k", "--key", "key_files", multiple=True, type=click.Path(dir_okay=False),
                 help=_help("key_files") + " Repeatable."),
    click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True),
                 help=_help("connect_timeout")),
    click.option("-t", "--command-timeout", "--timeout", "command_timeout",
                 type=click.FloatRange(min=0), help=_help("command_timeout")),
    click.option("-A", "--use-agent/--no-agent", default=None, help=_help("use_agent")),
    click.option("--identities-only", is_flag=True, help=_help("identities_only")),
    click.option("-J", "--jump", metavar="[USER@]HOST[:PORT][,...]", help=_help("jump")),
    click.option("-F", "--ssh-config", metavar="FILE", help=_help("ssh_config")),
    click.option("--no-ssh-config", "use_ssh_config", is_flag=True, flag_value=False,
                 default=True, help="Read no OpenSSH client config at all."),
    click.option("--known-hosts", multiple=True, type=click.Path(dir_okay=False),
                 help=_help("known_hosts") + " Repeatable."),
    click.option("--system-known-hosts/--no-system-known-hosts", default=True,
                 help=_help("system_known_hosts")),
    click.option("--host-key-policy", type=click.Choice(["strict", "accept-new"]),
                 help=_help("host_key_policy")),
]


_RUN_FLAGS = [
    click.option("--require-strict-kex", is_flag=True, help=_help("require_strict_kex")),
    click.option("--max-output", type=_Size(), default="1M", show_default=True,
                 help=_help("max_output") + " The rest is counted and dropped."),
    click.option("-P", "--parallel", type=click.IntRange(min=1), help=_help("parallel")),
    click.option("--processes", type=click.IntRange(min=1), help=_help("processes")),
    click.option("--batch", type=_CountOrPercent(1), metavar="N|N%", help=_help("batch")),
    click.option("--max-fail", type=_CountOrPercent(0), metavar="N|N%",
                 help=_help("max_fail")),
    click.option("--fail-fast", is_flag=True, help=_help("fail_fast")),
    click.option("--retries", type=click.IntRange(min=0), default=0, help=_help("retries")),
    click.option("--sudo", is_flag=True,
                 help="Run the command through sudo on each host (sudo -n, or sudo -S with "
                      "--ask-sudo-password). A wrong or missing sudo password is auth_failed, "
                      "not failed."),
    click.option("--sudo-user", metavar="USER", help=_help("sudo_user")),
]


_SECRET_FLAGS = {"password": "--ask-password", "passphrase": "--ask-passphrase",
                 "sudo_password": "--ask-sudo-password"}


_FORMATS = ["table", "gathered", "diff", "json", "jsonl", "stream"]


_RERUN = ["failed", "unreachable", "timeout", "not-ok"]


def _selection_options(function: Any) -> Any:
    for decorator in reversed([
        click.option("-i", "--inventory", type=click.Path(dir_okay=False),
                     envvar="FLEETEXEC_INVENTORY",
                     help="Inventory file: fleetexec YAML, or Ansible YAML or INI."),
        click.option("--inventory-format",
                     type=click.Choice(["fleetexec", "ansible-yaml", "ansible-ini"]),
                     help="The -i file's format [detected: fleetexec's top-level keys are "
                          "defaults/groups/hosts; Ansible YAML has groups such as all: with "
                          "hosts/children/vars; anything else is Ansible INI]."),
        click.option("-H", "--hosts", "host_patterns", multiple=True, metavar="PATTERN",
                     help="Hosts, ranges, globs or groups, comma lists; without an inventory, "
                          "targets like user@web[01-20]:2222. Repeatable."),
        click.option("-g", "--group", "groups", multiple=True, help="Inventory group. Repeatable."),
        click.option("-x", "--exclude", multiple=True, metavar="PATTERN",
                     help="Leave these hosts or groups out. Repeatable."),
        *_HOST_FLAGS,
    ]):
        function = decorator(function)
    return function


def _run_options(function: Any) -> Any:
    for decorator in reversed(_RUN_FLAGS):
        function = decorator(function)
    return function


def _options(opts: dict[str, Any]) -> Options:
    """The `Options` the flags spell; flags not given stay unset (the inventory applies)."""
    from ..options import Options

    names = Options.__dataclass_fields__
    given: dict[str, Any] = {k: v for k, v in opts.items()
                             if k in names and v is not None and v != ()}
    return Options(**given)


def _selected_hosts(selection: Sequence[str], opts: dict[str, Any]) -> tuple[list[Host], Options]:
    """The hosts chosen on the command line, resolved; a bad choice ends the program (exit 2)."""
    from ..resolve import resolve

    try:
        options = _options(opts)
        hosts = _select(opts["inventory"], [*selection, *opts["host_patterns"]], opts["groups"],
                        opts["exclude"], opts["inventory_format"])
        notes: list[str] = []
        resolved = resolve(hosts, options, notes)
    except FleetError as error:
        _fail(str(error))
    _notes(notes)
    return resolved, options


def _notes(notes: Sequence[str]) -> None:
    """What the ssh config asks and fleetexec does not do, and keys it skips: on stderr."""
    from ..render import sanitize

    for note in notes:
        click.echo(f"fleetexec: note: {sanitize(note, single_line=True)}", err=True)


def _select(inventory: str | None, patterns: Sequence[str], groups: Sequence[str],
            exclude: Sequence[str], inventory_format: str | None = None) -> list[Host]:
    from ..inventory import hosts_from_targets, load_inventory

    terms = [*patterns, *groups, *(f"!{x}" for x in exclude)]
    if inventory:
        hosts = load_inventory(inventory, inventory_format).select(*terms)
    elif inventory_format:
        raise InventoryError("--inventory-format needs an inventory (-i FILE)")
    elif groups:
        raise InventoryError("--group needs an inventory (-i FILE or FLEETEXEC_INVENTORY)")
    elif patterns:
        hosts = hosts_from_targets(patterns)
        for term in exclude:  # a mistyped exclusion would run where it should not
            excluded = {h.name for h in hosts_from_targets([term])}
            if not excluded & {h.name for h in hosts}:
                raise InventoryError(f"-x {term!r} matches none of the selected hosts")
            hosts = [h for h in hosts if h.name not in excluded]
    else:
        raise InventoryError("no hosts: give -i INVENTORY and/or -H HOSTS")
    if not hosts:
        raise InventoryError("the selection matches no hosts")
    return hosts


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="fleetexec")
def main() -> None:
    """Run a command across a fleet of servers over SSH, in parallel, safely.

    \b
    fleetexec demo                                  # a local mock fleet, no servers needed
    fleetexec run -i inventory.yaml -g web -- df -h
    fleetexec run -H 'deploy@web[01-20]' -- uptime
    fleetexec hosts -i inventory.yaml 'db*,!db3'
    fleetexec run --rerun failed -- uptime          # again, where the last run failed
    """


def _with_secrets(options: Options, opts: dict[str, Any]) -> Options:
    """The secrets, from the environment or asked once here, in the parent; never flags."""
    password = os.environ.get("FLEETEXEC_PASSWORD")
    if opts["ask_password"]:
        password = click.prompt("SSH password", hide_input=True, err=True)
    passphrase = os.environ.get("FLEETEXEC_PASSPHRASE")
    if opts["ask_passphrase"]:
        passphrase = click.prompt("Key passphrase", hide_input=True, err=True)
    sudo_password = os.environ.get("FLEETEXEC_SUDO_PASSWORD") or None
    if opts.get("ask_sudo_password"):
        if not options.sudo:
            raise click.UsageError("--ask-sudo-password needs --sudo")
        sudo_password = click.prompt("sudo password", hide_input=True, err=True)
    return options.replace(password=password, passphrase=passphrase,
                           sudo_password=sudo_password if options.sudo else None)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _warn(message: str) -> None:
    from ..render import sanitize

    click.echo(f"fleetexec: warning: {sanitize(message, single_line=True)}", err=True)
