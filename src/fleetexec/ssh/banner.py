"""The server's SSH banner, read inside the transport: capped, and a hang-up before it told apart.

The client's banner and KEXINIT go out before this is read (see `FleetTransport`),
so nothing here waits on the network that a server would not wait on too. It reads
only through paramiko's packetizer (plain `recv`, never `MSG_PEEK` or socket
options), so a paramiko `Channel` (a jump host's direct-tcpip) works as the socket.

`read_ahead` reads until a line starting ``SSH-`` is complete, enforcing what
OpenSSH enforces and paramiko does not (a line of at most 8192 bytes, where
paramiko would accumulate an endless line forever), and recognises a server that
hung up before saying anything, or said only "Exceeded MaxStartups": sshd's
MaxStartups drops look exactly like that, and are worth a retry. Everything read
is then handed back to the packetizer, so paramiko's own banner parsing (and its
error messages) see exactly the bytes that came.
"""

from __future__ import annotations

import time

import paramiko
from paramiko.packet import Packetizer

__all__ = ["BANNER_LINE_MAX", "MAX_STARTUPS_REFUSAL", "BannerTimeout", "BannerTooLong",
           "ClosedBeforeBanner", "give_back", "read_ahead"]

BANNER_LINE_MAX = 8192  # OpenSSH's SSH_MAX_BANNER_LEN: refuse longer pre-banner lines
MAX_STARTUPS_REFUSAL = b"Exceeded MaxStartups"  # what OpenSSH writes before hanging up
_PRE_BANNER_LINES = 100  # paramiko reads at most this many lines looking for "SSH-"
# paramiko keeps bytes read past the banner line here (name-mangled): see give_back.
_REMAINDER = "_Packetizer__remainder"


class ClosedBeforeBanner(paramiko.SSHException):
    """The server hung up before its banner (sshd's MaxStartups, a firewall): nothing was
    authenticated or run, so a new connection may be tried."""


class BannerTimeout(paramiko.SSHException):
    """No complete banner line within the time given."""


class BannerTooLong(paramiko.SSHException):
    """A line before the banner longer than OpenSSH accepts: not an SSH server."""


def read_ahead(packetizer: Packetizer, timeout: float) -> int:
    """Read until the banner line is complete (or the server gave up); return bytes read.

    Raises `ClosedBeforeBanner`, `BannerTimeout` or `BannerTooLong`. Whatever else
    happens (a banner line, 100 other lines, an end of file after some bytes) is
    left for paramiko's banner parsing: everything read is given back first.
    """
    deadline = time.monotonic() + timeout
    data = b""
    start = 0  # where the current line starts
    lines = 0
    try:
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                if len(data) - start > BANNER_LINE_MAX:
                    where = "a first line" if lines == 0 else "a line before its banner"
                    raise BannerTooLong(f"not an SSH server: {where} over "
                                        f"{BANNER_LINE_MAX} bytes")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BannerTimeout("no SSH banner in time")
                try:
                    chunk = packetizer._read_timeout(remaining)  # type: ignore[attr-defined]  # noqa: SLF001
                except TimeoutError:
                    raise BannerTimeout("no SSH banner in time") from None
                except (EOFError, OSError):
                    if not data and not packetizer.closed:
                        raise ClosedBeforeBanner("closed before the SSH banner") from None
                    return len(data)  # paramiko reports it, from the bytes given back
                data += chunk
                if lines == 0 and data.startswith(MAX_STARTUPS_REFUSAL):
                    raise ClosedBeforeBanner("Exceeded MaxStartups")
                continue
            if end - start > BANNER_LINE_MAX + 1:  # the line, and possibly a CR
                where = "a first line" if lines == 0 else "a line before its banner"
                raise BannerTooLong(f"not an SSH server: {where} over {BANNER_LINE_MAX} bytes")
            lines += 1
            if data.startswith(b"SSH-", start) or lines >= _PRE_BANNER_LINES:
                return len(data)
            start = end + 1
    finally:
        give_back(packetizer, data)


def give_back(packetizer: Packetizer, data: bytes) -> None:
    """Put `data` in front of whatever the packetizer reads next."""
    setattr(packetizer, _REMAINDER, data + getattr(packetizer, _REMAINDER))
