"""What a mock host does: scripted replies, faults, and built-in commands.

Pure data and matching, no I/O: `_mockserver` performs what this returns.
Public names are re-exported by `fleetexec.testing.mockfleet`.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "BINARY_PAYLOAD", "COMMAND_FAULTS", "HOST_FAULTS", "Action", "Fault", "MockHost", "Reply",
    "Responder", "builtin", "resolve",
]

#: What the ``binary`` fault writes to stdout and to stderr: invalid UTF-8, NUL,
#: and the terminal escapes a renderer must neutralise.
BINARY_PAYLOAD = (
    b"invalid-utf8 \xff\xfe\xc3\x28 NUL \x00 title \x1b]0;pwned-title\x07 "
    b"clear \x1b[2J clipboard \x1b]52;c;cHduZWQ=\x07 "
    b"link \x1b]8;;https://evil.example/\x07click\x1b]8;;\x07 report \x1b[6n "
    b"c1-csi \x9b31m utf8-c1 \xc2\x9b31m rlo \xe2\x80\xae desrever bs abc\x08\x08\x08 "
    b"cr fake\rline\n"
)


@dataclass(frozen=True, init=False)
class Reply:
    """What a command prints and how it exits; ``delay`` seconds pass first.

    ``str`` output is encoded as UTF-8. Exit codes are 32-bit, as on the wire.

    >>> Reply("ok\\n", exit_code=300)
    Reply(stdout=b'ok\\n', stderr=b'', exit_code=300, delay=0.0)
    """

    stdout: bytes
    stderr: bytes
    exit_code: int
    delay: float

    def __init__(
        self, stdout: bytes | str = b"", stderr: bytes | str = b"", exit_code: int = 0,
        delay: float = 0.0,
    ) -> None:
        for name, value in (("stdout", stdout), ("stderr", stderr)):
            object.__setattr__(self, name, value.encode() if isinstance(value, str) else value)
        object.__setattr__(self, "exit_code", exit_code)
        object.__setattr__(self, "delay", delay)


KeyType = Literal["ed25519", "ecdsa", "rsa"]
Stream = Literal["stdout", "stderr", "both"]

#: Fault kinds that act on a command; the others act on the connection.
COMMAND_FAULTS = frozenset(
    {"hang", "trickle", "flood", "binary", "drop", "no_exit_status", "signal"}
)
HOST_FAULTS = frozenset({"reject_auth", "slow_auth", "fresh_host_key", "changed_key_type",
                         "refuse_exec"})


@dataclass(frozen=True)
class Fault:
    """A misbehaviour, built with the class methods below.

    Command faults (a host's ``fault=``, or a value in its ``replies``):
    `hang`, `trickle`, `flood`, `binary`, `drop`, `no_exit_status`, `signal`.
    Host faults (``fault=`` only): `reject_auth`, `slow_auth`,
    `fresh_host_key`, `changed_key_type`, `refuse_exec`.

    >>> MockHost(replies={"deploy *": Fault.hang(b"starting\\n")}).respond("deploy web").kind
    'hang'
    """

    kind: str
    output: bytes = b""
    lines: int | None = None
    interval: float = 0.0
    mib: int = 0
    stream: Stream = "stdout"
    signame: str = ""
    seconds: float = 0.0
    rst: bool = False

    def __post_init__(self) -> None:
        if self.kind not in COMMAND_FAULTS | HOST_FAULTS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use the Fault.* constructors")

    @classmethod
    def hang(cls, output: bytes = b"") -> Fault:
        """Print ``output``, then never exit (until the client or fleet closes)."""
        return cls("hang", output)

    @classmethod
    def trickle(cls, lines: int | None = None, interval: float = 0.1) -> Fault:
        """Print a line every ``interval`` s, ``lines`` times (None: forever), exit 0."""
        return cls("trickle", lines=lines, interval=interval)

    @classmethod
    def flood(cls, mib: int, stream: Stream = "stdout") -> Fault:
        """Write ``mib`` MiB of a 64 KiB pattern to stdout, stderr or "both", exit 0."""
        if stream not in ("stdout", "stderr", "both"):
            raise ValueError(f"stream must be stdout, stderr or both, got {stream!r}")
        return cls("flood", mib=mib, stream=stream)

    @classmethod
    def binary(cls) -> Fault:
        """Write `BINARY_PAYLOAD` to stdout and to stderr, exit 0."""
        return cls("binary")

    @classmethod
    def drop(cls, output: bytes = b"partial output\n", *, rst: bool = False) -> Fault:
        """Print ``output``, then cut the TCP connection (FIN, or RST) with no EOF or status."""
        return cls("drop", output, rst=rst)

    @classmethod
    def no_exit_status(cls, output: bytes = b"") -> Fault:
        """Print ``output``, send EOF and close the channel without an exit status."""
        return cls("no_exit_status", output)

    @classmethod
    def signal(cls, name: str = "KILL", output: bytes = b"") -> Fault:
        """Print ``output``, send EOF, an ``exit-signal`` request (``name`` without SIG), close."""
        return cls("signal", output, signame=name.removeprefix("SIG"))

    @classmethod
    def reject_auth(cls) -> Fault:
        """Refuse every public key."""
        return cls("reject_auth")

    @classmethod
    def refuse_exec(cls) -> Fault:
        """Open session channels, but refuse every command on them."""
        return cls("refuse_exec")

    @classmethod
    def slow_auth(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before answering each public-key attempt."""
        return cls("slow_auth", seconds=seconds)

    @classmethod
    def fresh_host_key(cls) -> Fault:
        """Serve a host key of the same type as, but not, the one in known_hosts."""
        return cls("fresh_host_key")

    @classmethod
    def changed_key_type(cls) -> Fault:
        """known_hosts holds the configured key type; the server serves another type only."""
        return cls("changed_key_type")


Action = Reply | Fault
Responder = Reply | Fault | Callable[[str], Reply | Fault]


@dataclass(frozen=True)
class MockHost:
    """How one mock host behaves.

    ``replies`` maps a pattern to a `Reply`, a command `Fault`, or a callable
    ``(command) -> Reply | Fault``; the first match wins. A ``str`` pattern is
    an fnmatch glob over the whole command; an ``re.Pattern`` is ``search``ed.
    Unmatched commands go to ``default``, then (with ``passthrough``) a real
    local shell, then the fleet's default, then built-ins: ``hostname``,
    ``whoami``, ``true``, ``false``, ``echo``, ``sleep N``, ``exit N``, ``df [-h] [PATH...]``.

    >>> db = MockHost("db1", replies={"uptime": Reply("up 3 days\\n")})
    >>> db.respond("uptime")
    Reply(stdout=b'up 3 days\\n', stderr=b'', exit_code=0, delay=0.0)
    """

    name: str | None = None
    replies: Mapping[str | re.Pattern[str], Responder] = field(default_factory=dict)
    default: Responder | None = None
    fault: Fault | None = None
    passthrough: bool = False
    host_key_type: KeyType = "ed25519"
    strict_kex: bool = True  # False: an old server without the Terrapin countermeasure

    def __post_init__(self) -> None:
        if self.host_key_type not in ("ed25519", "ecdsa", "rsa"):
            raise ValueError(f"host_key_type must be ed25519, ecdsa or rsa: {self.host_key_type!r}")
        for value in [*self.replies.values(), self.default]:
            if isinstance(value, Fault) and value.kind not in COMMAND_FAULTS:
                raise ValueError(f"{value.kind} is a host fault: pass it as fault=")

    def respond(self, command: str) -> Action | None:
        """The scripted action for ``command``, or None when nothing here matches."""
        if self.fault is not None and self.fault.kind in COMMAND_FAULTS:
            return self.fault
        for pattern, responder in self.replies.items():
            hit = (
                fnmatch.fnmatchcase(command, pattern)
                if isinstance(pattern, str)
                else pattern.search(command) is not None
            )
            if hit:
                return resolve(responder, command)
        return None if self.default is None else resolve(self.default, command)


def resolve(responder: Responder, command: str) -> Action:
    """Call a callable responder; refuse what it returns unless a Reply or command Fault."""
    action = responder if isinstance(responder, Reply | Fault) else responder(command)
    if isinstance(action, Reply) or (isinstance(action, Fault) and action.kind in COMMAND_FAULTS):
        return action
    # Raised in the server thread on purpose: pytest reports it, a 127 would hide the bug.
    raise TypeError(f"a reply for {command!r} must be a Reply or a command Fault: {action!r}")


def builtin(command: str, host: str, user: str) -> Reply:
    """Deterministic stand-ins for a few harmless commands; everything else is 127."""
    try:
        argv = shlex.split(command)
    except ValueError:
        argv = []
    prog, args = (argv[0], argv[1:]) if argv else ("", [])
    if prog in ("hostname", "whoami") and not args:
        return Reply((host if prog == "hostname" else user) + "\n")
    if prog in ("true", "false"):
        return Reply(exit_code=int(prog == "false"))
    if prog == "echo":
        return Reply(" ".join(args) + "\n")
    if prog in ("sleep", "exit") and len(args) == 1:
        try:
            return Reply(delay=float(args[0])) if prog == "sleep" else Reply(exit_code=int(args[0]))
        except ValueError:
            pass
    if prog == "df":
        pct = 10 + zlib.crc32(host.encode()) % 80  # stable per host, differs between hosts
        used = 40 * pct // 100
        mounts = {
            "/": f"/dev/mapper/{host + '-root':<13} 40G {used:>4}G {40 - used:>4}G {pct:>3}% /\n",
            "/dev/shm": "tmpfs                     2.0G     0  2.0G   0% /dev/shm\n",  # noqa: S108
        }
        # `df [-h] PATH...`: the file system of each path (its longest mount point prefix).
        # A relative path is under the home directory, on the root file system.
        paths = [a if a.startswith("/") else "/" for a in args if not a.startswith("-")]
        chosen = [max((m for m in mounts if p == m or p.startswith(m.rstrip("/") + "/")),
                      key=len) for p in paths]
        lines = [mounts[m] for m in (chosen if paths else mounts)]
        return Reply("Filesystem                Size  Used Avail Use% Mounted on\n"
                     + "".join(lines))
    return Reply(stderr=f"mockfleet: command not scripted: {command}\n", exit_code=127)


