"""The identity (private key) files ssh would offer by default, and what can be learned
from one without paramiko and without its passphrase: why ssh would skip it, and its
public key.
"""

from __future__ import annotations

import os
import stat

__all__ = ["DEFAULT_IDENTITY_FILES", "identity_file_problem", "public_key_blob"]

# What `ssh -G` lists when no IdentityFile is configured, in its order (OpenSSH 9.2);
# id_xmss and id_dsa are left out: paramiko reads neither.
DEFAULT_IDENTITY_FILES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk",
                          "~/.ssh/id_ed25519", "~/.ssh/id_ed25519_sk")


def identity_file_problem(path: str, have_passphrase: bool) -> str | None:
    """Why ssh (in batch mode) would skip the default identity file `path`, or None.

    Read without paramiko (the parent process decides what to say): a file
    that is unreadable, readable by others, encrypted when no passphrase was
    given, or a kind of key paramiko cannot use. A file that does not exist is
    not a problem: it is simply not offered.
    """
    try:
        with open(path, "rb") as stream:
            info = os.fstat(stream.fileno())
            head = stream.read(64 * 1024)
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if info.st_uid == os.getuid() and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"is accessible by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run: chmod 600 {path}")
    text = head.decode("ascii", errors="replace")
    encrypted = "ENCRYPTED" in text or _openssh_cipher(text) not in (None, "none")
    if encrypted and not have_passphrase:
        return "is encrypted and no passphrase was given (--ask-passphrase)"
    if "-----BEGIN DSA PRIVATE KEY" in text or "ssh-dss" in (_openssh_type(text) or ""):
        return "is a DSA key, which paramiko does not support"
    if (_openssh_type(text) or "").startswith("sk-"):
        return "is a security-key (sk) key, which paramiko does not support"
    return None


def public_key_blob(path: str) -> bytes | None:
    """The public key of private key file `path`, read without decrypting it: from
    `path.pub`, else from the file's own clear public part (OpenSSH format). None if
    neither is there. How ssh matches an encrypted IdentityFile with the agent's copy."""
    import base64
    import binascii

    try:
        with open(path + ".pub", encoding="ascii", errors="replace") as stream:
            fields = stream.read(64 * 1024).split()
        return base64.b64decode(fields[1], validate=True) if len(fields) >= 2 else None
    except (OSError, ValueError, binascii.Error):
        pass
    try:
        with open(path, "rb") as stream:
            blob = _openssh_blob(stream.read(64 * 1024).decode("ascii", errors="replace"))
    except OSError:
        return None
    if blob is None:
        return None
    strings = _openssh_strings(blob, 3)
    at = len(b"openssh-key-v1\0") + sum(4 + len(s) for s in strings) + 4
    if len(strings) < 3 or at + 4 > len(blob):
        return None
    size = int.from_bytes(blob[at:at + 4], "big")
    return blob[at + 4: at + 4 + size] or None


def _openssh_blob(text: str) -> bytes | None:
    import base64
    import binascii

    begin, end = "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"
    if begin not in text or end not in text:
        return None
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        blob = base64.b64decode("".join(body.split()))
    except (binascii.Error, ValueError):
        return None
    return blob if blob.startswith(b"openssh-key-v1\0") else None


def _openssh_strings(blob: bytes, count: int) -> list[bytes]:
    out, at = [], len(b"openssh-key-v1\0")
    for _ in range(count):
        if at + 4 > len(blob):
            break
        size = int.from_bytes(blob[at:at + 4], "big")
        out.append(blob[at + 4: at + 4 + size])
        at += 4 + size
    return out


def _openssh_cipher(text: str) -> str | None:
    blob = _openssh_blob(text)
    if blob is None:
        return None
    strings = _openssh_strings(blob, 1)
    return strings[0].decode("ascii", errors="replace") if strings else None


def _openssh_type(text: str) -> str | None:
    blob = _openssh_blob(text)
    if blob is None:
        return None
    strings = _openssh_strings(blob, 3)  # cipher, kdf, kdf options; then count, public key
    at = len(b"openssh-key-v1\0") + sum(4 + len(s) for s in strings) + 4
    if len(strings) < 3 or at + 8 > len(blob):
        return None
    public = blob[at + 4:]
    size = int.from_bytes(public[:4], "big")
    return public[4:4 + size].decode("ascii", errors="replace")
