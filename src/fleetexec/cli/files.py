"""`fleetexec put` and `fleetexec get`: files both ways over SFTP, through `run`'s engine."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ..exceptions import FleetError

if TYPE_CHECKING:
    pass

from .common import (
    EXIT_CODES_HELP,
    _fail,
    _run_options,
    _selected_hosts,
    _selection_options,
    _with_secrets,
    main,
)
from .run import _execute

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
    from ..transfer import put_transfer

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
    from ..transfer import get_transfer

    _transfer(opts, lambda: get_transfer(remote, local_dir, recursive=opts["recursive"],
                                         preserve=opts["preserve"], checksum=opts["checksum"],
                                         force=opts["force"]))
