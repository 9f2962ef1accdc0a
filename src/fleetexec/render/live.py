"""Live output: chunks from many hosts as whole, sanitised `host: line` lines."""

from __future__ import annotations

import zlib

from .terminal import sanitize

__all__ = ["LiveLines"]

_PALETTE = (32, 33, 34, 35, 36, 92, 93, 94, 95, 96)  # ANSI colours for host names


class LiveLines:
    """Output chunks as they arrive → whole `host: line` lines, sanitised, one host per line.

    A partial line waits for its end (or for `flush` when the host finishes),
    so two hosts never share a line. stderr lines read `host [err]: …`.
    `colour` paints host names (our own escapes; remote text never gets one).
    """

    def __init__(self, width: int = 0, colour: bool = False) -> None:
        self.width, self.colour = width, colour
        self._partial: dict[tuple[str, str], bytes] = {}

    def feed(self, host: str, stream: str, data: bytes) -> list[str]:
        """The lines `data` completes for `host`'s `stream`."""
        pending = self._partial.pop((host, stream), b"") + data
        *whole, rest = pending.split(b"\n")
        if rest:
            self._partial[(host, stream)] = rest
        return [self._line(host, stream, line) for line in whole]

    def flush(self, host: str) -> list[str]:
        """`host`'s unfinished last lines, now that it has finished."""
        return [self._line(host, stream, self._partial.pop((host, stream)))
                for stream in ("stdout", "stderr") if (host, stream) in self._partial]

    def _line(self, host: str, stream: str, data: bytes) -> str:
        name = sanitize(host, single_line=True)
        label = name.ljust(self.width) if stream == "stdout" else f"{name} [err]"
        if self.colour:
            label = f"\x1b[{_PALETTE[zlib.crc32(host.encode()) % len(_PALETTE)]}m{label}\x1b[0m"
        text = sanitize(data.removesuffix(b"\r"), single_line=True)  # CRLF output
        return f"{label}: {text}"
