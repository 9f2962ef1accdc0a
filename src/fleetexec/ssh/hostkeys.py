"""known_hosts: parsed once per worker, looked up per host, appended under a lock.

paramiko's own `HostKeys` builds a key object for every line (120 ms for a
1000-line file, per client). Here a file is split into a plain dict once, and
only the matched host's keys become `PKey` objects.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

import paramiko

__all__ = ["KnownHosts", "fingerprint", "record_host_key"]


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style `SHA256:…` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


@dataclass
class KnownHosts:
    """The entries of one or more known_hosts files, ready for lookups.

    Hashed (`|1|salt|hash`) and `[host]:port` entries are understood.
    `@revoked` keys are refused even if listed elsewhere; `@cert-authority`
    lines are kept out of the lookup (paramiko cannot verify host
    certificates), so a host known only through a CA is reported as unknown
    rather than trusted by accident. Malformed lines are skipped one by one.
    """

    plain: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    hashed: list[tuple[bytes, bytes, str, str]] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)

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
        if marker == "@revoked":
            self.revoked.add(key_b64)
            return
        if marker is not None:
            return
        for name in names.split(","):
            if name.startswith("|1|"):
                try:
                    _, _, salt, digest = name.split("|")
                    entry = (base64.b64decode(salt), base64.b64decode(digest), key_type, key_b64)
                except (ValueError, binascii.Error):
                    continue
                self.hashed.append(entry)
            elif not name.startswith("!"):
                self.plain.setdefault(name, []).append((key_type, key_b64))

    def lookup(self, name: str) -> list[tuple[str, str]]:
        """The `(key type, base64 key)` pairs recorded for `name` (`host` or `[host]:port`)."""
        found = list(self.plain.get(name, ()))
        encoded = name.encode()
        for salt, digest, key_type, key_b64 in self.hashed:
            if hmac.compare_digest(hmac.new(salt, encoded, hashlib.sha1).digest(), digest):
                found.append((key_type, key_b64))
        return found

    def add(self, name: str, key: paramiko.PKey) -> None:
        """Remember a key learnt during this run (accept-new)."""
        self.plain.setdefault(name, []).append((key.get_name(), key.get_base64()))


def to_pkey(key_type: str, key_b64: str) -> paramiko.PKey | None:
    """A paramiko public key from a known_hosts entry, or None if unusable."""
    try:
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(key_b64))
    except (paramiko.SSHException, ValueError, binascii.Error, TypeError):
        return None


def record_host_key(path: str, name: str, key: paramiko.PKey) -> bool:
    """Append `name key` to known_hosts `path` atomically, under a lock.

    Several worker processes learn keys at once (accept-new), so the file is
    rewritten as a whole: lock, re-read, skip if another process already
    recorded this host, write a 0600 temp file, rename over. Returns False
    when an entry for `name` was already there.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                current = file.read()
        except FileNotFoundError:
            current = ""
        existing = KnownHosts()
        for old in current.splitlines():
            existing._add_line(old)
        if existing.lookup(name):
            return False
        if current and not current.endswith("\n"):
            current += "\n"
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".known_hosts.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(current + line)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
    return True
