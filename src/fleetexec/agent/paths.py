"""Where this user's agent listens: the first usable private directory for its socket.

Whoever can open the socket can run commands on your hosts without
authenticating, which is why the directory is checked on every use.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from ..exceptions import ConfigError

__all__ = ["choose_socket_path", "private_directory", "socket_path"]


def socket_path() -> Path:
    """Where this user's agent listens (see `choose_socket_path`)."""
    return choose_socket_path()[0]


def choose_socket_path() -> tuple[Path, list[str]]:
    """The first usable private directory of `$XDG_RUNTIME_DIR/fleetexec`,
    `$TMPDIR/fleetexec-UID` and `~/.fleetexec/run`, and why earlier ones were skipped.

    A directory someone else made (to block or spy on the agent) is skipped,
    so another local user cannot disable `--persist` by creating it first.
    """
    candidates = [Path(tempfile.gettempdir()) / f"fleetexec-{os.getuid()}",
                  Path.home() / ".fleetexec" / "run"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.insert(0, Path(os.environ["XDG_RUNTIME_DIR"]) / "fleetexec")
    skipped: list[str] = []
    for directory in candidates:
        try:
            private_directory(directory)
        except (OSError, ConfigError) as error:
            skipped.append(str(error))
            continue
        return directory / "agent.sock", skipped
    raise ConfigError("no private directory for the agent socket: " + "; ".join(skipped))


def private_directory(directory: Path) -> None:
    """Make `directory` if need be; refuse it unless it is ours, a directory, mode 0700."""
    with contextlib.suppress(FileExistsError):
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.mkdir(mode=0o700)
    info = os.lstat(directory)
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
            or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO)):
        raise ConfigError(f"{directory} is not a directory owned by you with mode 0700")
