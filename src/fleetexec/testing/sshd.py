"""A throwaway real OpenSSH ``sshd`` on loopback, for tests and benchmarks.

`OpenSSHServer` writes everything into a private temp dir (an ed25519 host
key, a client key pair, ``authorized_keys``, ``sshd_config``, the pid file and
sshd's stderr log), starts ``/usr/sbin/sshd -D -e -f CONFIG`` on a free port,
waits until it sends its SSH banner and stops the one process it started.

It listens on ``0.0.0.0`` so that one sshd on one port serves every
127.x.y.z address as a distinct "host"; ``AllowUsers *@127.0.0.0/8`` refuses
logins from anywhere else. Connect to 127.x addresses only.

    >>> with OpenSSHServer() as sshd:                          # doctest: +SKIP
    ...     hosts = addresses(3)                # 127.0.1.1 .. 127.0.1.3
    ...     sshd.write_inventory(tmp / "inv.yaml", hosts)

Skipping: call `require_sshd()` in a test or fixture: it skips with the reason
`is_available()` gives, or fails when ``FLEETEXEC_REQUIRE_SSHD=1`` is set, so CI
that must exercise real OpenSSH cannot pass by skipping.
"""

from __future__ import annotations

import getpass
import ipaddress
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["OpenSSHServer", "SSHDError", "addresses", "is_available", "require_sshd"]

SSHD = "/usr/sbin/sshd"  # absolute: sshd re-executes itself and insists on it
StrPath = str | os.PathLike[str]


class SSHDError(RuntimeError):
    """sshd refused its config, did not start in time, or died; carries its stderr."""


def is_available(sshd: str = SSHD) -> tuple[bool, str]:
    """Whether a real sshd can be started here, and if not, why.

    >>> ok, why = is_available()                               # doctest: +SKIP
    >>> if not ok: pytest.skip(why)                            # doctest: +SKIP
    """
    if not os.access(sshd, os.X_OK):
        return False, f"{sshd} not found or not executable (install openssh-server)"
    if os.geteuid() != 0:
        return False, f"sshd tests need root (privilege separation), running as uid {os.geteuid()}"
    try:
        pwd.getpwnam("sshd")
    except KeyError:
        return False, "the privilege separation user 'sshd' does not exist"
    return True, ""


def require_sshd(missing: str = "") -> None:
    """In a test: skip it when a real sshd cannot run here (or `missing` names another
    need that is not met), but fail it under ``FLEETEXEC_REQUIRE_SSHD=1``, where CI must
    not pass by skipping."""
    usable, why = is_available()
    if usable and missing:
        usable, why = False, missing
    if usable:
        return
    import pytest  # only tests call this

    if os.environ.get("FLEETEXEC_REQUIRE_SSHD") == "1":
        pytest.fail(f"FLEETEXEC_REQUIRE_SSHD=1 but sshd tests cannot run: {why}")
    pytest.skip(f"real sshd tests need OpenSSH sshd as root: {why}")


def addresses(n: int, base: str = "127.0.1.1") -> list[str]:
    """`n` distinct loopback addresses from `base` on, skipping .0 and .255.

    >>> addresses(3, base="127.0.1.253")
    ['127.0.1.253', '127.0.1.254', '127.0.2.1']
    """
    ip = ipaddress.IPv4Address(base)
    out: list[str] = []
    while len(out) < n:
        if not ip.is_loopback:
            raise ValueError(f"not enough loopback addresses after {base} for {n} hosts")
        if int(ip) & 0xFF not in (0, 255):
            out.append(str(ip))
        ip += 1
    return out


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 in one step: never briefly world-readable (CVE-2022-24302).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _keypair(path: Path, comment: str) -> str:
    """Write an OpenSSH ed25519 private key to `path`; return its public line."""
    key = Ed25519PrivateKey.generate()
    _write_private(path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ))
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH,
    ).decode()
    Path(f"{path}.pub").write_text(f"{public} {comment}\n")
    return public


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class OpenSSHServer:
    """A real sshd for the duration of a ``with`` block.

    `max_startups` is sshd's ``MaxStartups`` (e.g. ``"2:100:2"`` to make it
    drop connections), `max_sessions` its ``MaxSessions``; `extra_config`
    lines are appended to ``sshd_config`` verbatim. Keys exist from
    construction; `stop` removes the temp dir, so an instance starts once.
    With a tight MaxStartups, the readiness probe may hold a slot for a
    moment after `start` returns. `netns` runs it inside a network namespace
    the caller made (`probe_address`: one of its addresses reachable from
    here; `clients`: the networks it accepts logins from).

    >>> with OpenSSHServer(max_startups="2:100:2") as sshd:    # doctest: +SKIP
    ...     sshd.write_known_hosts(tmp / "known_hosts", ["127.0.1.1"])
    """

    def __init__(
        self, *, max_startups: str = "4000:30:8000", max_sessions: int = 64,
        extra_config: Sequence[str] = (), sshd: str = SSHD, start_timeout: float = 10.0,
        netns: str | None = None, probe_address: str = "127.0.0.1",
        clients: Sequence[str] = ("127.0.0.0/8",),
    ) -> None:
        self.netns = netns  # run inside this network namespace (the caller made it)
        self.probe_address = probe_address  # where the readiness probe connects
        self.clients = tuple(clients)  # networks logins are accepted from
        self.max_startups = max_startups
        self.max_sessions = max_sessions
        self.extra_config = list(extra_config)
        self.sshd = sshd
        self.start_timeout = start_timeout
        self.user = getpass.getuser()
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="fleetexec-sshd-"))
        self.host_key_path = self.dir / "ssh_host_ed25519_key"
        self.client_key_path = self.dir / "id_ed25519"
        self.config_path = self.dir / "sshd_config"
        self.log_path = self.dir / "sshd.log"
        self.host_public_key = _keypair(self.host_key_path, "fleetexec-test-host")
        client_public = _keypair(self.client_key_path, "fleetexec-test-client")
        (self.dir / "authorized_keys").write_text(client_public + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> OpenSSHServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The pid of the sshd we started (None before start / after stop)."""
        return None if self._proc is None else self._proc.pid

    def config_text(self, port: int) -> str:
        """The ``sshd_config`` this server runs with on `port`."""
        lines = [
            "ListenAddress 0.0.0.0",  # one port serves every 127.x.y.z
            f"Port {port}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            # loopback clients only (or the networks given), whatever the bind
            "AllowUsers " + " ".join(f"*@{network}" for network in self.clients),
            "StrictModes no",  # the temp dir is not ~/.ssh
            "UsePAM no", "UseDNS no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",  # tests run as root
            f"MaxStartups {self.max_startups}", f"MaxSessions {self.max_sessions}",
            *([] if any(line.startswith("LogLevel") for line in self.extra_config)
              else ["LogLevel ERROR"]),  # sshd takes a keyword's first value
            # bash sources ~/.bashrc for ssh commands while SHLVL < 2; root's
            # runs `pyenv init` (slow, noisy). SHLVL=1 becomes 2 in bash.
            "SetEnv SHLVL=1",
            # No AcceptEnv line: the client's environment is not accepted.
            "X11Forwarding no", "PrintMotd no",
            *self.extra_config,
        ]
        if not any(line.split()[:2] == ["Subsystem", "sftp"] for line in self.extra_config):
            # In-process SFTP (put/get), no sftp-server binary needed: global, before any
            # Match block of extra_config, and only when it defines none (sshd refuses two).
            lines.insert(lines.index("X11Forwarding no"), "Subsystem sftp internal-sftp")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Validate the config, start sshd on a free port, wait for its banner.

        On failure the temp dir is removed and `SSHDError` carries sshd's stderr.
        """
        if self._proc is not None:
            raise SSHDError("already started")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privsep chroot dir
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for _attempt in range(5):
            port = _free_port()
            self.config_path.write_text(self.config_text(port))
            self._run_check()
            with self.log_path.open("wb") as log:
                netns = ["ip", "netns", "exec", self.netns] if self.netns else []
                self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, our own config
                    [*netns, self.sshd, "-D", "-e", "-f", str(self.config_path)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                )
            if self._wait_ready(self._proc, port):
                self.port = port
                return
            # sshd exited: most likely someone took the port in between; retry.
            self._proc = None
            if b"Address already in use" not in self.log_path.read_bytes():
                break
        raise SSHDError(f"sshd did not start:\n{self.log_path.read_text(errors='replace')}")

    def _run_check(self) -> None:
        check = subprocess.run(  # noqa: S603 - fixed argv, our own config
            [self.sshd, "-t", "-f", str(self.config_path)],
            capture_output=True, check=False, timeout=self.start_timeout,
        )
        if check.returncode != 0:
            stderr = check.stderr.decode(errors="replace").strip()
            raise SSHDError(f"sshd -t rejected {self.config_path}:\n{stderr}")

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int) -> bool:
        """Poll-connect until the banner arrives (True) or sshd exits (False)."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                # The wait doubles as the pause between probes and notices an early exit.
                proc.wait(timeout=0.01)
                return False
            except subprocess.TimeoutExpired:
                pass
            try:
                with socket.create_connection((self.probe_address, port),
                                              timeout=1.0) as probe:
                    if probe.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                continue
        raise SSHDError(
            f"sshd sent no banner on port {port} within {self.start_timeout} s:\n"
            + self.log_path.read_text(errors="replace")
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the sshd we started (kill it if it lingers); remove the temp dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- files for clients -------------------------------------------------
    def write_known_hosts(self, path: StrPath, addresses: Iterable[str]) -> Path:
        """Write ``[addr]:port ssh-ed25519 AAAA…`` for each address; return the path.

        >>> sshd.write_known_hosts(tmp / "known_hosts", ["127.0.1.1"])  # doctest: +SKIP
        """
        lines = [f"[{_loopback(a)}]:{self.port} {self.host_public_key}\n" for a in addresses]
        out = Path(path)
        out.write_text("".join(lines))
        return out

    def write_inventory(
        self, path: StrPath, addresses: Sequence[str], names: Sequence[str] | None = None,
        *, known_hosts: StrPath | None = None,
    ) -> Path:
        """Write a YAML inventory (hosts h1..hN unless `names`) and its known_hosts.

        known_hosts goes to `known_hosts`, by default ``known_hosts`` beside
        the inventory. Returns the inventory path.

        >>> sshd.write_inventory(tmp / "inv.yaml", addresses(2))  # doctest: +SKIP
        """
        out = Path(path).absolute()
        names = [f"h{i + 1}" for i in range(len(addresses))] if names is None else names
        if len(names) != len(addresses):  # checked before any file is written
            raise ValueError(f"{len(names)} names for {len(addresses)} addresses")
        kh = self.write_known_hosts(known_hosts or out.parent / "known_hosts", addresses).absolute()
        # JSON strings are valid YAML scalars: quoting without importing yaml.
        q = json.dumps
        text = [
            "defaults:",
            f"  user: {q(self.user)}",
            f"  port: {self.port}",
            f"  key_files: [{q(str(self.client_key_path))}]",
            f"  known_hosts_file: {q(str(kh))}",
            "hosts:",
        ]
        for name, addr in zip(names, addresses, strict=True):
            text.append(f"  {q(name)}: {{ address: {q(_loopback(addr))} }}")
        out.write_text("\n".join(text) + "\n")
        return out

    addresses = staticmethod(addresses)


def _loopback(address: str) -> str:
    if not ipaddress.IPv4Address(address).is_loopback:
        raise ValueError(f"test hosts must be 127.x.y.z loopback addresses, not {address!r}")
    return address
