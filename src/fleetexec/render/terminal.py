"""The one terminal sanitiser: everything meant for a terminal passes through `sanitize`.

Output, host names, error texts and signal names all do: remote output can
otherwise set the window title, write the clipboard (OSC 52), forge earlier
lines or make the terminal type an answer (`CSI 6 n`). Control and format
characters become visible escapes (`\\x1b`, `\\u202e`), invalid UTF-8 bytes
become `\\xNN`. Backslashes are not doubled, so literal `\\x1b` text in the
output looks the same as an escaped ESC: harmless (both are inert), and paths
stay readable.
"""

from __future__ import annotations

import functools
import unicodedata

__all__ = ["sanitize"]

# Controls, format/bidi characters, surrogates and the line/paragraph separators.
# Private-use (Co) and unassigned (Cn) code points are left alone: terminals
# do not act on them, and escaping Cn would mangle text newer than our Unicode.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Every code point in those categories lies in planes 0, 1 and 14; scanning only
# these keeps the one-off table build at ~10 ms (a test checks the full range).
_SCAN_RANGES = (range(0x20000), range(0xE0000, 0xE1000))
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(cp: int) -> str:
    if 0xDC80 <= cp <= 0xDCFF:  # a byte smuggled in by surrogateescape: show the byte
        return f"\\x{cp - 0xDC00:02x}"
    if cp < 0x100:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"


@functools.cache
def _table(single_line: bool) -> dict[int, str]:
    # Built on first use, not at import, so `fleetexec --help` pays nothing.
    table = {cp: _escape(cp) for span in _SCAN_RANGES for cp in span
             if unicodedata.category(chr(cp)) in _UNSAFE_CATEGORIES}
    table.update({ord(ch): esc for ch, esc in _NAMED.items()})
    if not single_line:
        del table[ord("\n")], table[ord("\t")]
    return table


def sanitize(text: str | bytes, *, single_line: bool = False) -> str:
    """Make `text` safe to print on a terminal, keeping it readable.

    Bytes are decoded as UTF-8 with invalid bytes shown as `\\xNN`. Every
    C0 control but newline and tab, DEL, C1 (U+0080-U+009F, including the
    8-bit CSI U+009B), ESC, format/bidi characters (category Cf, e.g. U+202E,
    U+200B), surrogates and U+2028/U+2029 become visible escapes; a lone `\\r`
    is shown as `\\r` (it would let a line overwrite itself) but CRLF is
    read as a plain line end. With `single_line=True`, newline, tab and CRLF
    are escaped too: for table cells, host names and error texts.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    if not single_line:
        # CR right before LF cannot hide anything; showing it on every line of
        # a Windows-style output would only add noise.
        text = text.replace("\r\n", "\n")
    # str.translate with a cached dict: ~30 ms per MiB even when every
    # character needs escaping (a regex with a callback is ~4x slower).
    return text.translate(_table(single_line))
