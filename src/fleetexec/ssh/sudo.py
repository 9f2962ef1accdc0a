"""`--sudo`: wrap the command, answer sudo's prompt once, keep sudo out of the output.

The remote command line becomes (every word `shlex.quote`d)

    sudo -S -p PROMPT [-u USER] -- sh -c 'printf %s-ran-%s HEAD TAIL >&2; exec sh -c "$1"' \
        sh COMMAND

or, without a password, `sudo -n [-u USER] -- ...`, which fails at once instead of
asking. PROMPT and MARKER are random for every command on every host. Nothing is
written to the channel's stdin until stderr says which program reads it (MARKER is printed
as HEAD-ran-TAIL, so sudo quoting the command line in a refusal never contains it):

* PROMPT: sudo asks for the password, so it (and a newline) is sent, once. A second
  PROMPT means it was wrong: end of file then ends sudo, and the password is not
  sent again.
* MARKER: the wrapped shell runs as the target user, so sudo is done; `--stdin`'s
  data (or nothing) and end of file follow. A NOPASSWD or cached sudo never prompts,
  so the password never reaches the command's stdin.

Everything on stderr before MARKER is sudo's own (prompts, lecture, "Sorry, try
again."): dropped when the command ran, kept without the prompts as the explanation
when it did not. The password is only ever written to the channel, never to argv,
the output, an error text or a log.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable
from typing import Protocol

from ..options import Secret

__all__ = ["SudoGate"]

_SAID_MAX = 64 * 1024  # sudo's own words before the marker, kept for the explanation
_ERROR_MAX = 200


class _Sink(Protocol):
    def add(self, chunk: bytes) -> None: ...


class _Writable(Protocol):
    def sendall(self, data: bytes) -> None: ...

    def shutdown_write(self) -> None: ...


class SudoGate:
    """Sits between the channel's stderr and the kept stderr of one command under sudo.

    `wrap` the command, `attach` the channel once the command was sent, feed every
    stderr chunk to `add`, `close` after the drain; `failure()` then says why sudo
    did not run the command (`ran` is False), or None.
    """

    __slots__ = ("_answered", "_channel", "_err", "_explanation", "_password", "_said",
                 "_start_input", "_tail", "marker", "prompt", "prompts", "ran", "total", "user",
                 "wrong")

    def __init__(self, err: _Sink, user: str | None, password: Secret | None) -> None:
        self._err, self.user, self._password = err, user, password
        # No `%` (a sudo prompt escape), nothing a shell would expand; random per command.
        self.prompt = f"fleetexec-sudo-prompt-{secrets.token_hex(16)}:".encode()
        self.marker = f"fleetexec-sudo-ran-{secrets.token_hex(16)}".encode()
        self.prompts = 0  # how often sudo asked
        self.ran = False  # the marker came: the command runs as the target user
        self.wrong = False  # sudo asked again after the password was sent
        self.total = 0
        self._said = bytearray()
        self._explanation = b""  # what sudo said, prompts removed, when it did not run it
        self._tail = b""
        self._answered = False
        self._channel: _Writable | None = None
        self._start_input: Callable[[], object] = lambda: None

    def wrap(self, command: str) -> str:
        """The remote command line running `command` under sudo (no secret in it)."""
        how = ["-S", "-p", self.prompt.decode()] if self._password is not None else ["-n"]
        who = ["-u", self.user] if self.user is not None else []
        # Printed in two halves: sudo's refusals quote the command line, which then holds
        # the halves apart, never the marker itself.
        head, tail = self.marker.decode().split("-ran-")
        script = f'printf %s-ran-%s {head} {tail} >&2; exec sh -c "$1"'
        return shlex.join(["sudo", *how, *who, "--", "sh", "-c", script, "sh", command])

    def attach(self, channel: _Writable, start_input: Callable[[], object]) -> None:
        """The command was sent on `channel`; `start_input` sends its stdin and EOF."""
        self._channel, self._start_input = channel, start_input

    def add(self, chunk: bytes) -> None:
        """One chunk of the channel's stderr."""
        self.total += len(chunk)
        if self.ran:
            self._err.add(chunk)
            return
        # The tail of the chunks before finds a prompt or the marker split between
        # chunks; a prompt counts only once, when it ends in this chunk.
        window = self._tail + chunk
        cut = window.find(self.marker)
        before = window if cut < 0 else window[:cut]
        at = before.find(self.prompt)
        while at >= 0:
            if at + len(self.prompt) > len(self._tail):
                self._asked()
            at = before.find(self.prompt, at + len(self.prompt))
        if cut < 0:
            keep = max(len(self.prompt), len(self.marker)) - 1
            self._tail = window[-keep:]
            room = _SAID_MAX - len(self._said)
            if room > 0:
                self._said += chunk[:room]
            return
        self.ran = True
        self._said.clear()  # sudo's words: the command's stderr starts after the marker
        self._tail = b""
        rest = window[cut + len(self.marker):]
        self._start_input()
        if rest:
            self._err.add(rest)

    def close(self) -> None:
        """The stream ended: when sudo did not run the command, keep what it said."""
        if not self.ran and self._said:
            self._explanation = bytes(self._said).replace(self.prompt, b"")
            self._said.clear()
            if self._explanation:
                self._err.add(self._explanation)

    def failure(self) -> str | None:
        """Why sudo did not run the command, in one line; None when it did."""
        if self.ran:
            return None
        if self.wrong or (self.prompts and b"incorrect password" in self._explanation):
            return "sudo: wrong password"
        if self._password is None and b"password is required" in self._explanation:
            return "sudo: a password is required (use --ask-sudo-password)"
        lines = [line.strip() for line in self._explanation.splitlines() if line.strip()]
        last = lines[-1].decode(errors="replace")[:_ERROR_MAX] if lines else ""
        return f"sudo did not run the command: {last}" if last else \
            "sudo did not run the command"

    def _asked(self) -> None:
        self.prompts += 1
        if self._channel is None or self._password is None:
            return
        try:
            if not self._answered:
                self._answered = True
                self._channel.sendall(self._password.reveal().encode() + b"\n")
            elif not self.wrong:
                self.wrong = True  # asked again: the password was wrong; never resend it
                self._channel.shutdown_write()
        except OSError:
            pass  # the channel closed: the drain reports what happened
