"""`fleetexec run`: flags → `FleetSession` → the chosen view → exit code; and reruns."""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from ..exceptions import FleetError, InventoryError
from ..host import Host
from ..results import FleetResult, HostResult

if TYPE_CHECKING:
    from ..backends import Backend, Output
    from ..options import Options
    from ..outdir import OutdirWriter
    from ..transfer import Transfer

from .common import (
    _FORMATS,
    _RERUN,
    EXIT_CODES_HELP,
    _fail,
    _notes,
    _options,
    _raise_interrupt,
    _run_options,
    _select,
    _selected_hosts,
    _selection_options,
    _warn,
    _with_secrets,
    main,
)


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
    if opts["output_format"] == "stream" and ctx.get_parameter_source(
            "max_output") is click.core.ParameterSource.DEFAULT:
        # The lines went to the terminal; results keep what a saved run keeps, no more.
        from ..history import SAVED_OUTPUT

        options = options.replace(max_output=min(options.max_output, SAVED_OUTPUT))
    backend: Backend | None = None
    if opts["persist"]:
        from ..agent import AgentBackend

        backend = AgentBackend(idle=opts["persist_idle"])
    if opts["scheduler"]:
        if opts["persist"]:
            raise click.UsageError("--persist and --scheduler cannot be combined")
        from ..backends.dask import DaskBackend

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
    from .. import render
    from ..api import FleetSession
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
                                     on_output=_output_to(console, output_format, outdir),
                                     stdin=stdin)
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
        for piece in render.iter_json(result):  # printable ASCII: nothing for click to strip
            click.echo(piece, nl=False, color=True)
        click.echo()
    elif output_format == "stream":
        for failed in result.failed.values():  # what the lines could not say
            click.echo(render.render_progress_line(failed))
        click.echo(render.render_summary(result))
    else:
        click.echo(render.render_summary(result), err=True)
    return result


def _outdir_writer(opts: dict[str, Any], hosts: list[Host]) -> OutdirWriter | None:
    """`--outdir`'s writer, made before anything runs (a non-empty DIR is exit 2)."""
    if opts["outdir"] is None:
        if opts["force"]:
            raise click.UsageError("--force only applies to --outdir")
        return None
    from ..outdir import OutdirWriter

    try:
        return OutdirWriter(opts["outdir"], force=opts["force"], hosts=[h.name for h in hosts])
    except FleetError as error:
        _fail(str(error))


def _output_to(console: Any, output_format: str, outdir: OutdirWriter | None) -> Any:
    """Where output goes as it arrives: the terminal (-o stream), files (--outdir), both."""
    if outdir is None:
        return console.on_output if output_format == "stream" else None
    failed: set[str] = set()

    def write(output: Output) -> None:
        if output_format == "stream":
            console.on_output(output)
        try:
            outdir.on_output(output)
        except (OSError, FleetError) as error:  # said once; its result says it again
            if output.host not in failed:
                failed.add(output.host)
                _warn(f"--outdir: {output.host}: {error}")

    return write


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
    from ..history import save

    try:
        save(result, hosts, command, known_hosts=options.absolute().known_hosts)
    except (OSError, FleetError) as error:
        _warn(f"could not save this run for `fleetexec last` and --rerun: {error}")


def _rerun_hosts(ctx: click.Context, selection: Sequence[str],
                 opts: dict[str, Any]) -> tuple[list[Host], Options]:
    """The hosts of a saved run that `--rerun` selects, narrowed by any selection given."""
    from .. import history
    from ..inventory import hosts_from_targets
    from ..resolve import resolve

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
    from .. import render

    if output_format == "json":
        click.echo(render.render_json(result), color=True)
    elif output_format == "jsonl":
        for r in result.values():
            click.echo(render.render_jsonl_line(r), color=True)
        click.echo(render.render_summary(result), err=True)
    else:
        views = {"table": render.render_table, "gathered": render.render_gathered,
                 "diff": render.render_diff}
        click.echo(views[output_format](result))
        click.echo(render.render_summary(result))
