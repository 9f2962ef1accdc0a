"""Saved runs: what `fleetexec last` shows again and `run --rerun` starts from.

Every CLI run (`fleetexec run`, unless `--no-save`) is saved as one JSON file
in `runs_dir()`: `$XDG_STATE_HOME/fleetexec/runs/`, or
`~/.local/state/fleetexec/runs/` when `XDG_STATE_HOME` is unset or not an
absolute path (the XDG rule). The `fleetexec` and `runs` directories are
created 0700 (a looser one of ours is tightened; one that is a symlink or
belongs to someone else is refused), each file is written 0600 under a fresh
name and renamed into place, and only the newest `KEEP` (20) are kept.

A record holds the command, the run's times and counts, the extra known_hosts
files it used, each host's resolved connection settings (name, address, port,
user, key files, timeouts, its known_hosts file, groups, what was written on
the target) so a rerun needs no inventory, and each host's result, with the
first `SAVED_OUTPUT` (64 KiB) of each output so `last` can show any view (what
was cut is flagged truncated). It never holds a secret: `Host`
records carry none, and passwords and passphrases are not saved. The command
and the outputs are saved as they are, like shell history: a secret typed
into a command is in the record (the file is yours alone, 0600).

Schema (version 1)::

    {"fleetexec_run": 1, "command": str, "saved": float (epoch seconds),
     "wall_time": float, "interrupted": bool, "exit_code": int,
     "counts": {status: int}, "known_hosts": [absolute path, ...],
     "hosts": [{"name", "address", "port", "user", "key_files",
                "connect_timeout", "command_timeout", "known_hosts_file",
                "groups", "explicit"}, ...],
     "results": [render.result_to_dict(r) without stdout/stderr/*_b64, and
                 "stdout": i, "stderr": j indexes into "outputs"],
     "outputs": [{"text": str} or {"b64": str}, ...]}

Each distinct output is stored once (a fleet mostly prints the same thing):
as text when it is valid UTF-8, else as the base64 of its bytes, so the exact
bytes come back. Hosts and results are in the run's (inventory) order.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .exceptions import ConfigError
from .host import Host
from .results import FleetResult, HostResult, Status

__all__ = [
    "KEEP", "SELECTIONS", "RunRecord", "Which", "load", "load_last", "runs_dir", "save", "select",
]

KEEP = 20
SAVED_OUTPUT = 64 * 1024  # bytes of each host's stdout and stderr kept in a record
VERSION = 1
_SUFFIX = ".json"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

Which = Literal["failed", "unreachable", "timeout", "not-ok"]

#: What each `--rerun` word selects. `failed`: the command ran and did not
#: succeed. `unreachable`: the host could not be reached, verified or
#: authenticated, or was lost (exactly the statuses of exit code 3).
#: `timeout`: a deadline passed. `not-ok`: every status but `ok` (`interrupted`
#: and `skipped` included).
SELECTIONS: Mapping[str, frozenset[Status]] = {
    "failed": frozenset({Status.FAILED, Status.KILLED, Status.NO_EXIT_STATUS}),
    "unreachable": frozenset({
        Status.UNREACHABLE, Status.AUTH_FAILED, Status.HOSTKEY_UNKNOWN, Status.HOSTKEY_CHANGED,
        Status.PROTOCOL_ERROR, Status.CONNECTION_LOST, Status.ERROR}),
    "timeout": frozenset({Status.TIMEOUT}),
    "not-ok": frozenset(set(Status) - {Status.OK}),
}


@dataclass(frozen=True)
class RunRecord:
    """One saved run: its command, its hosts' settings and its result."""

    path: str
    command: str
    saved: float
    hosts: tuple[Host, ...]
    result: FleetResult
    known_hosts: tuple[str, ...] = ()

    def hosts_named(self, names: Iterable[str]) -> list[Host]:
        """The saved `Host` records of `names`, in the run's order."""
        wanted = set(names)
        return [h for h in self.hosts if h.name in wanted]

    def describe(self) -> str:
        """`2025-06-01 12:00:03: 5 hosts: df -h /` (local time; not sanitised)."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved))
        count = len(self.hosts)
        return f"{when}: {count} host{'' if count == 1 else 's'}: {self.command}"


def runs_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where runs are saved (not created here): see the module docstring."""
    env = os.environ if environ is None else environ
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        home = env.get("HOME") or os.path.expanduser("~")
        state = os.path.join(home, ".local", "state")
    return Path(state) / "fleetexec" / "runs"


def select(record: RunRecord, which: str) -> list[str]:
    """The names of `record`'s hosts whose status `which` selects (`SELECTIONS`), in order."""
    if which not in SELECTIONS:
        raise ConfigError(f"cannot select {which!r}: use one of {', '.join(SELECTIONS)}")
    statuses = SELECTIONS[which]
    return [name for name, r in record.result.items() if r.status in statuses]


def save(result: FleetResult, hosts: Sequence[Host], command: str, *,
         known_hosts: Sequence[str] = (), directory: str | os.PathLike[str] | None = None,
         keep: int = KEEP) -> Path:
    """Save a run; return the new file. Then only the newest `keep` files are kept.

    `hosts` are the run's resolved hosts (`FleetSession.hosts`): every host of
    `result` needs its settings there. Raises `OSError`, or `ConfigError` for
    an unsafe directory or a host without settings, when it cannot save.
    """
    if directory is None:
        folder = runs_dir()
        _private_dir(folder.parent)  # .../fleetexec
    else:
        folder = Path(directory)
    _private_dir(folder)
    data = json.dumps(_record(result, hosts, command, known_hosts), ensure_ascii=True,
                      separators=(",", ":")).encode("ascii")
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000_000))
    name = f"{stamp}.{now % 1_000_000_000:09d}Z-{secrets.token_hex(3)}{_SUFFIX}"
    temp = folder / f".tmp-{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temp, folder / name)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _prune(folder, keep)
    return folder / name


def load_last(directory: str | os.PathLike[str] | None = None) -> RunRecord:
    """The newest saved run; `ConfigError` when there is none."""
    folder = Path(directory) if directory is not None else runs_dir()
    saved = _saved(folder)
    if not saved:
        raise ConfigError(f"no saved run in {folder} (runs are saved by `fleetexec run` "
                          "unless --no-save)")
    return load(saved[-1])


def load(path: str | os.PathLike[str]) -> RunRecord:
    """A saved run from `path`; `ConfigError` naming the file when it cannot be read."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as file:
            data = json.loads(file.read())
        return _parse(where, data)
    except OSError as error:
        raise ConfigError(f"{where}: cannot read it: {error.strerror or error}") from None
    except (ValueError, TypeError, KeyError, IndexError, binascii.Error) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{where}: not a fleetexec run record: {error}") from None


# --- writing ---------------------------------------------------------------------------


def _host_dict(h: Host) -> dict[str, Any]:
    return {
        "name": h.name, "address": h.address, "port": h.port, "user": h.user,
        "key_files": list(h.key_files), "connect_timeout": h.connect_timeout,
        "command_timeout": h.command_timeout, "known_hosts_file": h.known_hosts_file,
        "groups": list(h.groups), "explicit": sorted(h.explicit),
    }


def _record(result: FleetResult, hosts: Sequence[Host], command: str,
            known_hosts: Sequence[str]) -> dict[str, Any]:
    from .render import result_to_dict

    outputs: list[dict[str, str]] = []
    index: dict[bytes, int] = {}

    def ref(data: bytes) -> int:
        if data not in index:
            index[data] = len(outputs)
            try:
                outputs.append({"text": data.decode("utf-8")})
            except UnicodeDecodeError:
                outputs.append({"b64": base64.b64encode(data).decode("ascii")})
        return index[data]

    settings = {h.name: h for h in hosts}
    missing = [name for name in result if name not in settings]
    if missing:
        raise ConfigError(f"no connection settings for host {missing[0]!r}")
    results = []
    for r in result.values():
        entry = result_to_dict(r)
        for name in ("stdout_b64", "stderr_b64"):
            del entry[name]
        # A record keeps a bounded share of each output: 1000 hosts x 1 MiB, 20 times
        # over, would otherwise fill the disk. What was cut is flagged truncated.
        for stream, data in (("stdout", r.stdout), ("stderr", r.stderr)):
            if len(data) > SAVED_OUTPUT:
                entry[f"{stream}_truncated"] = entry["truncated"] = True
            entry[stream] = ref(data[:SAVED_OUTPUT])
        results.append(entry)
    return {
        "fleetexec_run": VERSION,
        "command": command,
        "saved": round(time.time(), 6),
        "wall_time": result.wall_time,
        "interrupted": result.interrupted,
        "exit_code": result.exit_code,
        "counts": {str(status): n for status, n in result.counts().items()},
        "known_hosts": list(known_hosts),
        "hosts": [_host_dict(settings[name]) for name in result],
        "results": results,
        "outputs": outputs,
    }


def _private_dir(path: Path) -> None:
    """`path` exists as our own directory, mode 0700, not a symlink; else ConfigError."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path}: not a directory (a symlink is not accepted here)")
    if info.st_uid != os.geteuid():
        raise ConfigError(f"{path}: belongs to another user")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)


def _saved(folder: Path) -> list[Path]:
    """The saved runs in `folder`, oldest first (names sort by time)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [folder / n for n in sorted(names)
            if n.endswith(_SUFFIX) and not n.startswith(".") and n[:1].isdigit()]


def _prune(folder: Path, keep: int) -> None:
    saved = _saved(folder)
    for path in saved[: max(len(saved) - keep, 0)]:
        path.unlink(missing_ok=True)


# --- reading ---------------------------------------------------------------------------


def _parse(where: str, data: Any) -> RunRecord:
    if not isinstance(data, dict) or data.get("fleetexec_run") != VERSION:
        raise ConfigError(f"{where}: not a fleetexec run record (version {VERSION})")
    outputs = [_output(o) for o in data["outputs"]]
    hosts = tuple(_host(h) for h in data["hosts"])
    results: dict[str, HostResult] = {}
    for entry in data["results"]:
        r = HostResult(
            host=_text(entry["host"]), status=Status(entry["status"]),
            exit_code=_optional(entry["exit_code"], int), signal=_optional(entry["signal"], str),
            stdout=outputs[entry["stdout"]], stderr=outputs[entry["stderr"]],
            stdout_truncated=bool(entry["stdout_truncated"]),
            stderr_truncated=bool(entry["stderr_truncated"]),
            started=float(entry["started"]), duration=float(entry["duration"]),
            error=_optional(entry["error"], str))
        results[r.host] = r
    if [h.name for h in hosts] != list(results):
        raise ConfigError(f"{where}: its hosts and results do not match")
    result = FleetResult(results, wall_time=float(data["wall_time"]),
                         interrupted=bool(data["interrupted"]))
    return RunRecord(path=where, command=_text(data["command"]), saved=float(data["saved"]),
                     hosts=hosts, result=result,
                     known_hosts=tuple(_text(p) for p in data.get("known_hosts", [])))


def _output(entry: Any) -> bytes:
    if "b64" in entry:
        return base64.b64decode(_text(entry["b64"]), validate=True)
    return _text(entry["text"]).encode("utf-8")


def _host(entry: Any) -> Host:
    def timeout(value: Any) -> float | None:
        return None if value is None else float(value)

    return Host(
        name=_text(entry["name"]), address=_text(entry["address"]),
        port=_optional(entry["port"], int),
        user=_optional(entry["user"], str),
        key_files=tuple(_text(p) for p in entry["key_files"]),
        connect_timeout=timeout(entry["connect_timeout"]),
        command_timeout=timeout(entry["command_timeout"]),
        known_hosts_file=_optional(entry["known_hosts_file"], str),
        groups=tuple(_text(g) for g in entry.get("groups", [])),
        explicit=frozenset(_text(e) for e in entry.get("explicit", [])),
    )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _optional(value: Any, kind: type[Any]) -> Any:
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__} or null, got {value!r}")
    return value
