"""known_hosts: parsed into a plain dict, looked up per host, appended under a lock.

paramiko's own `HostKeys` builds a key object for every line (120 ms for a
1000-line file, per client). Here a file is split into a plain dict, and
only the matched host's keys become `PKey` objects.

Names follow OpenSSH: host names are compared lower-cased (plain entries are
lower-cased when read, hashed ones are matched against the hash of the
lower-cased name), and accept-new records the lower-cased name. Host
patterns follow OpenSSH's `match_hostname` too: see `_matches`.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import hashlib
import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import paramiko

from ..patterns import match_list

__all__ = ["HostKeyConflict", "KnownHosts", "fingerprint", "record_host_key"]


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style `SHA256:…` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass
class KnownHosts:
    """The entries of one or more known_hosts files, ready for lookups.

    Hashed (`|1|salt|hash`) and `[host]:port` entries are understood, and so
    are host patterns (`*.example.com`, `web?`, `[10.0.0.*]:2222`,
    `!bastion.example.com`): a line whose names hold a pattern applies to a
    name as OpenSSH decides (`_matches`), so a host it covers is not "new".
    `@revoked` keys are refused even if listed elsewhere, and a `@revoked`
    line still counts as an entry for the names it lists (such a host is not
    "new"). `@cert-authority` lines are kept out of the lookup (paramiko
    cannot verify host certificates), so a host known only through a CA is
    reported as unknown rather than trusted by accident. Malformed lines are
    skipped one by one.
    """

    plain: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    hashed: list[tuple[bytes, bytes, str, str]] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    # Lines with a wildcard or `!` name: scanned on each lookup (they are few), while
    # exact names stay O(1) dict hits. A negation can veto the line's other names,
    # so such a line is kept whole: (its lower-cased names, key type, base64 key).
    patterns: list[tuple[tuple[str, ...], str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, paths: Iterable[str]) -> KnownHosts:
        """Parse every readable file in `paths`; missing files are skipped."""
        known = cls()
        for path in paths:
            try:
                with open(path, encoding="utf-8", errors="replace") as file:
                    for line in file:
                        known._add_line(line)
            except (FileNotFoundError, NotADirectoryError):
                continue
        return known

    def _add_line(self, line: str) -> None:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            return
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if len(fields) < 3:
            return
        names, key_type, key_b64 = fields[0], fields[1], fields[2]
        if marker is not None and marker != "@revoked":
            return
        exact: list[str] = []
        for name in names.split(","):
            if name.startswith("|1|"):  # hashed: an exact match of the hash, never a pattern
                try:
                    _, _, salt, digest = name.split("|")
                    entry = (base64.b64decode(salt), base64.b64decode(digest), key_type, key_b64)
                except (ValueError, binascii.Error):
                    continue
                self.hashed.append(entry)
            else:
                exact.append(name.lower())
        if marker == "@revoked":
            self.revoked.add(key_b64)  # refused for every host, wherever it is presented
            # Its literal names are known hosts; its patterns are not indexed, or the usual
            # `@revoked * KEY` would make every host known and accept-new refuse them all.
            exact = [name for name in exact if not _is_pattern(name)]
        elif any(_is_pattern(name) for name in exact):
            self.patterns.append((tuple(exact), key_type, key_b64))
            return
        for name in exact:
            self.plain.setdefault(name, []).append((key_type, key_b64))

    def lookup(self, name: str) -> list[tuple[str, str]]:
        """Every `(key type, base64 key)` recorded for `name` (`host` or `[host]:port`),
        revoked ones included: any entry at all means the host is not new."""
        name = name.lower()
        found = list(self.plain.get(name, ()))
        encoded = name.encode()
        for salt, digest, key_type, key_b64 in self.hashed:
            if hmac.compare_digest(hmac.new(salt, encoded, hashlib.sha1).digest(), digest):
                found.append((key_type, key_b64))
        found.extend((t, b) for names, t, b in self.patterns if _matches(name, names))
        return found

    def trusts(self, name: str, key: paramiko.PKey) -> bool:
        """Whether `key` is recorded for `name` and not revoked (a kept connection's check)."""
        key_b64 = key.get_base64()
        return key_b64 not in self.revoked and any(b == key_b64 for _, b in self.lookup(name))


def _is_pattern(name: str) -> bool:
    return name.startswith("!") or "*" in name or "?" in name


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    """OpenSSH's `match_hostname`: some pattern matches `name` and no `!pattern` does.

    Both sides are lower-cased already. A `[host]:port` name is matched as
    written, so `[10.0.0.*]:2222` covers port 2222 only and `*` covers all.
    """
    return match_list(name, patterns) == 1


def to_pkey(key_type: str, key_b64: str) -> paramiko.PKey | None:
    """A paramiko public key from a known_hosts entry, or None if unusable."""
    try:
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
    except (paramiko.SSHException, ValueError, binascii.Error, TypeError):
        return None


class HostKeyConflict(Exception):
    """The file already has another key for the name, or revokes this one: not a new host."""


def record_host_key(path: str, name: str, key: paramiko.PKey) -> bool:
    """Append `name key` to known_hosts `path` as OpenSSH does, unless `name` is known there.

    The line goes to the end of the file's real path (a symlink stays a
    symlink) in one O_APPEND write of bytes. Nothing else in the file is
    rewritten, so a line another writer appends meanwhile (fleetexec or a
    plain `>>`) is never lost, and bytes that are not UTF-8 survive. Other
    workers record at the same time, so the file is re-read under an
    exclusive `flock` on the file itself before anything is written:

    * True: the line was appended (a file that did not exist is created 0600).
    * False: this very key is already recorded for `name` (another worker was
      first): the key is trusted exactly as if this call had written it.
    * raises `HostKeyConflict`: `name` has another entry there, or the key is
      `@revoked` there. The host is not new: the caller must refuse it as a
      changed key.
    """
    name = name.lower()  # OpenSSH records names lower-cased
    real = os.path.realpath(path)
    os.makedirs(os.path.dirname(real), mode=0o700, exist_ok=True)
    for _attempt in range(5):
        with open(real, "a+b", buffering=0, opener=_open_private) as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            if not _same_file(file.fileno(), real):
                continue  # replaced while we waited (ssh-keygen -R renames): a line would be lost
            file.seek(0)
            current = file.readall()
            if _already_recorded(current, real, name, key):
                return False
            line = f"{name} {key.get_name()} {key.get_base64()}\n".encode()
            if current and not current.endswith(b"\n"):
                line = b"\n" + line
            if file.write(line) != len(line):
                raise OSError(errno.EIO, "short write")
            return True
    raise OSError(errno.EAGAIN, "the file kept being replaced")


def _open_private(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CLOEXEC, 0o600)


def _same_file(fd: int, path: str) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (now.st_dev, now.st_ino)


def _already_recorded(current: bytes, path: str, name: str, key: paramiko.PKey) -> bool:
    """True if `key` is recorded for `name` in `current`; raises if anything else is."""
    existing = KnownHosts()
    for line in current.decode("utf-8", errors="replace").splitlines():
        existing._add_line(line)
    key_b64 = key.get_base64()
    if key_b64 in existing.revoked:
        raise HostKeyConflict(f"{path} marks this key @revoked")
    recorded = existing.lookup(name)
    if any(b == key_b64 for _, b in recorded):
        return True
    if recorded:
        key_type, other_b64 = recorded[0]
        other = to_pkey(key_type, other_b64)
        shown = f"{key_type} {fingerprint(other)}" if other else f"an unusable {key_type} key"
        raise HostKeyConflict(f"{path} has {shown}")
    return False
