"""The `fleetexec` command: options → API call → renderer → exit code. Nothing else.

Heavy imports (the executor, paramiko in the workers) happen only inside the
commands that need them, so `fleetexec --help` and `fleetexec hosts` start fast.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .exceptions import FleetError, InventoryError
from .host import Host
from .results import EXIT_INTERRUPTED, EXIT_USAGE, FleetResult, HostResult

if TYPE_CHECKING:
    from .backends import Backend
    from .options import Options
    from .outdir import OutdirWriter
    from .transfer import Transfer

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
    from .options import Options

    meta = Options.__dataclass_fields__[field].metadata
    default = meta["builtin"]
    return str(meta["help"]) + (f" [{default}]" if default is not None else "")


# One click line per `Options` field (a test pins them against the record). Per-host
# settings come first: `fleetexec hosts` takes those too. Secrets are never flags.
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
    from .options import Options

    names = Options.__dataclass_fields__
    given: dict[str, Any] = {k: v for k, v in opts.items()
                             if k in names and v is not None and v != ()}
    return Options(**given)


def _selected_hosts(selection: Sequence[str], opts: dict[str, Any]) -> tuple[list[Host], Options]:
    """The hosts chosen on the command line, resolved; a bad choice ends the program (exit 2)."""
    from .resolve import resolve

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
    from .render import sanitize

    for note in notes:
        click.echo(f"fleetexec: note: {sanitize(note, single_line=True)}", err=True)


def _select(inventory: str | None, patterns: Sequence[str], groups: Sequence[str],
            exclude: Sequence[str], inventory_format: str | None = None) -> list[Host]:
    from .inventory import hosts_from_targets, load_inventory

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


@main.command(cls=_RunCommand, epilog=EXIT_CODES_HELP)
@click.argument("selection", nargs=-1)
@_selection_options
@_run_options
@click.option("-o", "--format", "output_format", default="table", show_default=True,
              type=click.Choice(_FORMATS),
              help="stream: `host: line` as output arrives, then the summary. diff: "
                   "gathered, then each group's differences from the largest.")
@click.option("--ask-password", is_flag=True,
              help="Prompt once for a password (or set FLEETEXEC_PASSWORD).")
@click.option("--ask-passphrase", is_flag=True,
              help="Prompt once for the key passphrase (or set FLEETEXEC_PASSPHRASE).")
@click.option("--ask-sudo-password", is_flag=True,
              help="With --sudo: prompt once for the sudo password (or set "
                   "FLEETEXEC_SUDO_PASSWORD); sent to a host only when its sudo asks.")
@click.option("--persist", is_flag=True,
              help="Keep connections open in a per-user background agent (like ssh's "
                   "ControlPersist), so the next --persist run skips the handshakes.")
@click.option("--persist-idle", default=600.0, show_default=True, metavar="SECONDS",
              type=click.FloatRange(min=1), help="The agent exits after this long unused.")
@click.option("--scheduler", envvar="FLEETEXEC_SCHEDULER", metavar="ADDRESS",
              help="Run on a Dask cluster: its scheduler, e.g. tcp://HOST:8786 (needs "
                   "pip install 'fleetexec[dask]'). Workers use their own keys.")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on a terminal (a line per finished host when stderr is "
                   "not one) [on when stderr is a terminal, except with -o stream].")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@click.option("--stdin", "send_stdin", is_flag=True,
              help="Send this program's standard input (read once, at most 16 MiB) to every "
                   "host's command. Without it, commands get an empty input.")
@click.option("--outdir", type=click.Path(file_okay=False), metavar="DIR",
              help="Also write each host's stdout, stderr and status to DIR/HOST.out, .err "
                   "and .json as it finishes. DIR must be new or empty.")
@click.option("--force", is_flag=True,
              help="With --outdir: use a non-empty DIR, replacing this run's hosts' files.")
@click.option("--rerun", type=click.Choice(_RERUN),
              help="Run on the hosts of the last saved run that ended so: failed (ran, did "
                   "not succeed), unreachable (not reached, verified or authenticated, or "
                   "lost), timeout, not-ok (all but ok). A selection narrows them.")
@click.option("--from", "rerun_from", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --rerun: this saved run instead of the last.")
@click.option("--no-save", is_flag=True,
              help="Do not save this run (for `fleetexec last` and --rerun).")
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
    if opts["rerun"]:
        hosts, options = _rerun_hosts(ctx, selection, opts)
    elif opts["rerun_from"]:
        raise click.UsageError("--from needs --rerun")
    else:
        hosts, options = _selected_hosts(selection, opts)
    writer = _outdir_writer(opts, hosts)
    options = _with_secrets(options, opts)
    backend: Backend | None = None
    if opts["persist"]:
        from .agent import AgentBackend

        backend = AgentBackend(idle=opts["persist_idle"])
    if opts["scheduler"]:
        if opts["persist"]:
            raise click.UsageError("--persist and --scheduler cannot be combined")
        from .backends.dask import DaskBackend

        try:
            backend = DaskBackend(opts["scheduler"])
        except FleetError as error:
            _fail(str(error))
    stdin = _read_stdin() if opts["send_stdin"] else None
    result = _execute(hosts, " ".join(command_words), options, backend,
                      opts["output_format"], opts["progress"], opts["quiet"],
                      outdir=writer, save=not opts["no_save"], stdin=stdin)
    sys.exit(result.exit_code)


_MAX_STDIN = 16 * 1024 * 1024


def _read_stdin() -> bytes:
    """Standard input, read once for every host; bounded, so a stray pipe cannot eat memory."""
    if sys.stdin.isatty():
        raise click.UsageError("--stdin needs input from a pipe or a file, e.g. < script.sh")
    data = sys.stdin.buffer.read(_MAX_STDIN + 1)
    if len(data) > _MAX_STDIN:
        raise click.UsageError(f"--stdin: more than {_MAX_STDIN >> 20} MiB of input")
    return data


def _execute(
    hosts: list[Host], command: str, options: Options, backend: Backend | None,
    output_format: str, progress: bool | None, quiet: bool = False, *,
    outdir: OutdirWriter | None = None, save: bool = False, stdin: bytes | None = None,
    transfer: Transfer | None = None,
) -> FleetResult:
    from . import render
    from .api import FleetSession
    from .console import Console

    console = Console(hosts, output_format, progress, quiet)
    # SIGTERM stops the run the way Ctrl-C does: partial results, no orphans.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with FleetSession(hosts, options, backend=backend, keep_connections=False) as session:
            _notes(session.notes)
            if transfer is not None:  # put / get: files instead of a command
                result = session.transfer(transfer, on_result=console.on_result)
            else:
                result = session.run(command, on_result=_with_outdir(console.on_result, outdir),
                                     on_output=console.on_output if output_format == "stream"
                                     else None, stdin=stdin)
    except FleetError as error:
        console.close()
        _fail(str(error))
    console.close()
    if outdir is not None:
        outdir.close()
    if save:  # before printing: a closed pipe (`| head`) must not lose the record
        _save_run(result, session.hosts, command, options)
    for note in getattr(backend, "notes", ()):
        click.echo(f"fleetexec: note: {note}", err=True)
    if output_format == "table":
        click.echo(render.render_table(result))
        click.echo(render.render_summary(result))
    elif output_format == "gathered":
        click.echo(render.render_gathered(result))
        click.echo(render.render_summary(result))
    elif output_format == "diff":
        click.echo(render.render_diff(result))
        click.echo(render.render_summary(result))
    elif output_format == "json":
        for piece in render.iter_json(result):
            click.echo(piece, nl=False)
        click.echo()
    elif output_format == "stream":
        for failed in result.failed.values():  # what the lines could not say
            click.echo(render.render_progress_line(failed))
        click.echo(render.render_summary(result))
    else:
        click.echo(render.render_summary(result), err=True)
    return result


TRANSFER_HELP = """\b
Results: a host's output is a one-line summary (files, bytes, seconds,
throughput). A file error (no such file, permission denied, a size or
checksum mismatch, an existing local file) is `failed`, exit code 1, with
the path in the error; the command deadline (-t, 60 s by default, 0 = none)
cut it: `timeout`, 4; the connection died: `connection_lost`, 3; the
server has no SFTP: `protocol_error`, 3.
"""


def _transfer_options(function: Any) -> Any:
    for decorator in reversed([
        click.option("-r", "--recursive", is_flag=True, help="Copy directories and their "
                     "contents (symlinks to files are copied as files; symlinks to "
                     "directories and special files are skipped)."),
        click.option("--preserve", is_flag=True,
                     help="Keep modes and modification times (scp -p; -p is --port here)."),
        click.option("--checksum", is_flag=True,
                     help="Also compare SHA-256 after the transfer (the host's by its "
                          "sha256sum, on the same connection). Sizes are always compared."),
        click.option("-o", "--format", "output_format", default="table", show_default=True,
                     type=click.Choice(["table", "gathered", "json", "jsonl"])),
        click.option("--ask-password", is_flag=True,
                     help="Prompt once for a password (or set FLEETEXEC_PASSWORD)."),
        click.option("--ask-passphrase", is_flag=True,
                     help="Prompt once for the key passphrase (or set FLEETEXEC_PASSPHRASE)."),
        click.option("--progress/--no-progress", default=None,
                     help="A progress bar on a terminal [on when stderr is a terminal]."),
        click.option("-q", "--quiet", is_flag=True, help="No progress display."),
        click.option("--no-save", is_flag=True,
                     help="Do not save this run (for `fleetexec last`)."),
    ]):
        function = decorator(function)
    return function


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


def _transfer(opts: dict[str, Any], make: Any) -> NoReturn:
    """put / get: hosts and secrets as `run` takes them, then the transfer `make()` builds."""
    hosts, options = _selected_hosts((), opts)
    try:
        transfer = make()
    except FleetError as error:
        _fail(str(error))
    options = _with_secrets(options, opts)
    result = _execute(hosts, transfer.describe(), options, None, opts["output_format"],
                      opts["progress"], opts["quiet"], save=not opts["no_save"],
                      transfer=transfer)
    sys.exit(result.exit_code)


@main.command(epilog=TRANSFER_HELP + EXIT_CODES_HELP)
@click.argument("paths", nargs=-1, required=True, metavar="LOCAL... REMOTE")
@_selection_options
@_run_options
@_transfer_options
def put(paths: tuple[str, ...], **opts: Any) -> None:
    """Copy local files to every selected host over SFTP: put -H HOSTS LOCAL... REMOTE

    \b
    fleetexec put -g web app.conf /etc/app/
    fleetexec put -H 'web[1-9]' -r --preserve --checksum dist/ /srv/app/releases/

    REMOTE is an existing directory (each LOCAL goes into it), or, for one
    LOCAL, its new path; relative paths and ~/ are from the login directory,
    and nothing else is expanded. Each file is written to a temporary name in
    its directory and renamed over the real name once complete and checked,
    so a cut transfer never leaves a half file there. Remote files are replaced.
    """
    from .transfer import put_transfer

    if len(paths) < 2:
        raise click.UsageError("put needs LOCAL... REMOTE, e.g. fleetexec put -H web1 f.conf /tmp/")
    _transfer(opts, lambda: put_transfer(paths[:-1], paths[-1], recursive=opts["recursive"],
                                         preserve=opts["preserve"], checksum=opts["checksum"]))


@main.command(epilog=TRANSFER_HELP + EXIT_CODES_HELP)
@click.argument("remote")
@click.argument("local_dir", metavar="LOCALDIR")
@_selection_options
@_run_options
@_transfer_options
@click.option("--force", is_flag=True, help="Replace local files that already exist.")
def get(remote: str, local_dir: str, **opts: Any) -> None:
    """Copy a file (or with -r a directory) from every selected host into LOCALDIR/HOST/.

    \b
    fleetexec get -g web /etc/app/app.conf confs/    # confs/web1/app.conf, ...
    fleetexec get -H 'db[1-3]' -r /var/log/postgresql logs/

    Files land in LOCALDIR/HOST/ under REMOTE's last name. LOCALDIR is made
    if missing. An existing local file fails that host unless --force;
    a symlink below LOCALDIR is never followed; names from the host that
    are not plain file names (.., /) fail the host.
    """
    from .transfer import get_transfer

    _transfer(opts, lambda: get_transfer(remote, local_dir, recursive=opts["recursive"],
                                         preserve=opts["preserve"], checksum=opts["checksum"],
                                         force=opts["force"]))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _warn(message: str) -> None:
    from .render import sanitize

    click.echo(f"fleetexec: warning: {sanitize(message, single_line=True)}", err=True)


def _outdir_writer(opts: dict[str, Any], hosts: list[Host]) -> OutdirWriter | None:
    """`--outdir`'s writer, made before anything runs (a non-empty DIR is exit 2)."""
    if opts["outdir"] is None:
        if opts["force"]:
            raise click.UsageError("--force only applies to --outdir")
        return None
    from .outdir import OutdirWriter

    try:
        return OutdirWriter(opts["outdir"], force=opts["force"], hosts=[h.name for h in hosts])
    except FleetError as error:
        _fail(str(error))


def _with_outdir(on_result: Any, outdir: OutdirWriter | None) -> Any:
    if outdir is None:
        return on_result

    def both(result: HostResult) -> None:
        on_result(result)
        try:
            outdir(result)
        except (OSError, FleetError) as error:  # the run goes on; the files are extra
            _warn(f"--outdir: {result.host}: {error}")

    return both


def _save_run(result: FleetResult, hosts: list[Host], command: str, options: Options) -> None:
    from .history import save

    try:
        save(result, hosts, command, known_hosts=options.absolute().known_hosts)
    except (OSError, FleetError) as error:
        _warn(f"could not save this run for `fleetexec last` and --rerun: {error}")


def _rerun_hosts(ctx: click.Context, selection: Sequence[str],
                 opts: dict[str, Any]) -> tuple[list[Host], Options]:
    """The hosts of a saved run that `--rerun` selects, narrowed by any selection given."""
    from . import history
    from .inventory import hosts_from_targets
    from .resolve import resolve

    which = opts["rerun"]
    try:
        record = history.load(opts["rerun_from"]) if opts["rerun_from"] else history.load_last()
        names = history.select(record, which)
        what = f"the run in {record.path}" if opts["rerun_from"] else "the last run"
        if not names:
            raise InventoryError(f"--rerun {which}: {what} had no {which} hosts "
                                 f"({record.describe()}); nothing to run")
        inventory_given = opts["inventory"] and ctx.get_parameter_source(
            "inventory") is not click.core.ParameterSource.ENVIRONMENT
        patterns = [*selection, *opts["host_patterns"]]
        if inventory_given or patterns or opts["groups"]:
            chosen = {h.name for h in _select(opts["inventory"], patterns, opts["groups"],
                                              opts["exclude"], opts["inventory_format"])}
            names = [n for n in names if n in chosen]
        else:
            for term in opts["exclude"]:
                excluded = {h.name for h in hosts_from_targets([term])}
                if not excluded & {h.name for h in record.hosts}:  # mistyped: refuse it
                    raise InventoryError(f"-x {term!r} matches no host of {what}")
                names = [n for n in names if n not in excluded]
        if not names:
            raise InventoryError(f"--rerun {which}: none of the {which} hosts of {what} "
                                 "is in the selection; nothing to run")
        # The saved run's extra known_hosts files verify its hosts, unless others are given.
        options = _options({**opts, "known_hosts": opts["known_hosts"] or record.known_hosts})
        notes: list[str] = []
        hosts = resolve(record.hosts_named(names), options, notes)
    except FleetError as error:
        _fail(str(error))
    _notes(notes)
    return hosts, options


def _show(result: FleetResult, output_format: str) -> None:
    """A finished run in `output_format` (not `stream`): what `fleetexec last` prints."""
    from . import render

    if output_format == "json":
        click.echo(render.render_json(result))
    elif output_format == "jsonl":
        for r in result.values():
            click.echo(render.render_jsonl_line(r))
        click.echo(render.render_summary(result), err=True)
    else:
        views = {"table": render.render_table, "gathered": render.render_gathered,
                 "diff": render.render_diff}
        click.echo(views[output_format](result))
        click.echo(render.render_summary(result))


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("selection", nargs=-1)
@_selection_options
@click.option("-o", "--format", "output_format", default="table", show_default=True,
              type=click.Choice(["table", "json"]),
              help="json: every effective setting of each host and where it came from "
                   "(target, flag, inventory, ssh-config, default).")
def hosts(selection: tuple[str, ...], output_format: str, **opts: Any) -> None:
    """Print the selected hosts with their effective settings (never a secret)."""
    from .render import render_hosts, render_hosts_json
    from .resolve import explain

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
    from .inventory import load_inventory
    from .options import Options
    from .testing import MockFleet

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
    from .history import load, load_last
    from .render import sanitize

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
