"""Connecting to one host: TCP (or a bastion's channel, or a ProxyCommand), banner, key
exchange, host key, auth, under one deadline.

The handshake itself is `FleetTransport`'s (it reads the banner and pipelines
what it may, see `pipeline`); here: the socket, the retries, the deadline, and
turning what went wrong into a `Failure`.
"""

from __future__ import annotations

import functools
import random
import socket
import time
from typing import TYPE_CHECKING

import paramiko

from ..exceptions import ConfigError
from ..host import Host
from ..resolve import accept_new_file, host_key_policy
from ..results import Status
from .banner import BannerTimeout, BannerTooLong
from .credentials import FleetAuth, WeakKeyExchange
from .failure import Failure
from .hostkeys import HostKeyConflict, KnownHosts, fingerprint, record_host_key, to_pkey
from .transport import FleetTransport, close_client
from .tunnel import ProxySocket, proxy_command_socket
from .watchdog import Alarm

if TYPE_CHECKING:
    from .pacing import Turn
    from .session import WorkerContext

__all__ = ["connect"]

_CLOSED_BEFORE_BANNER_RETRIES = 5  # sshd's MaxStartups drops look exactly like this
_TUNNEL_RETRIES = 2  # a handshake through a bastion whose stream broke (see _garbled_tunnel)


class _ClosedBeforeBanner(Exception):
    """The server hung up before its banner: worth another connection."""


class UnknownKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown host keys: refused (strict) or recorded first (accept-new). Never AutoAdd."""

    def __init__(self, context: WorkerContext, host: Host, known: KnownHosts) -> None:
        self.context, self.host, self.known = context, host, known

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        # paramiko asks only when no usable, unrevoked key is recorded for `hostname`.
        # The name known_hosts uses is ours (HostKeyAlias may differ from paramiko's).
        hostname = self.host.known_hosts_name
        name = hostname.lower()  # OpenSSH compares and records host names lower-cased
        offered = f"{key.get_name()} {fingerprint(key)}"
        where = f"{hostname} ({offered})"
        if key.get_base64() in self.known.revoked:
            raise Failure(Status.HOSTKEY_CHANGED, f"host key of {where} is marked @revoked")
        if self.known.lookup(name):
            # Its entries' keys are all revoked or unreadable: a known host, never a new one.
            raise Failure(Status.HOSTKEY_CHANGED, f"HOST KEY CHANGED for {hostname}: server "
                          f"offers {offered}, known_hosts has only revoked or unusable keys "
                          "for it; refusing")
        if host_key_policy(self.host, self.context.options) != "accept-new":
            raise Failure(
                Status.HOSTKEY_UNKNOWN,
                f"host key of {where} is not in known_hosts; verify it and add it, "
                "or use --host-key-policy accept-new",
            )
        path = accept_new_file(self.host, self.context.options)
        try:
            # True (appended) and False (this very key was already there) both mean trusted.
            record_host_key(path, name, key)
        except HostKeyConflict as conflict:  # another key got there first: not a new host
            raise Failure(Status.HOSTKEY_CHANGED, f"HOST KEY CHANGED for {hostname}: server "
                          f"offers {offered}, {conflict}; refusing (possible "
                          "man-in-the-middle, or the host was reinstalled)") from None
        except OSError as error:
            raise Failure(
                Status.ERROR, f"cannot record host key in {path}: {error.strerror}"
            ) from None


def connect(host: Host, context: WorkerContext, begin: float,
            turn: Turn | None = None) -> paramiko.SSHClient:
    """TCP + banner + key exchange + host key + auth, all under one wall-clock deadline.

    `turn` is the host's handshake slot: given back once the server's banner came
    (the rest of the handshake only waits on the network), and while pausing
    between retries."""
    timeout = host.connect_timeout
    assert timeout is not None  # noqa: S101 - resolve() fills it
    deadline = begin + timeout
    try:  # before connecting: a key file deleted or spoilt since the last use is refused here
        keys = [context.configured_key(host, p) for p in host.key_files]
    except ConfigError as error:
        raise Failure(Status.ERROR, str(error)) from None
    attempts = 0
    tunnel_retries = _TUNNEL_RETRIES
    while True:
        sock: socket.socket | paramiko.Channel
        if host.via:  # through the bastions' shared connections; their own deadlines apply
            sock, ready = context.bastions.channel(host, timeout)
            if not attempts:  # each hop has its own connect deadline, as in `ssh -J`
                deadline = ready + timeout
        elif host.proxy_command:
            sock = proxy_command_socket(host.proxy_command)
        else:
            sock = _open_socket_retrying(host, deadline, timeout, context.options.retries,
                                         turn)
        alarm = context.watchdog.arm(deadline, sock)
        client = paramiko.SSHClient()
        try:
            _handshake(client, sock, host, context, alarm, timeout, keys, turn)
            return client
        except BaseException as error:
            ended = Failure(Status.CONNECTION_LOST, "")
            if isinstance(error, _ClosedBeforeBanner):
                _explain_proxy(ended, sock)
            close_client(client)
            sock.close()
            if _garbled_tunnel(error, host, client, tunnel_retries):
                tunnel_retries -= 1
                continue
            if not isinstance(error, _ClosedBeforeBanner):
                raise
            if ended.message:  # a ProxyCommand that exited: another try would not help
                raise ended from None
        finally:
            alarm.cancel()
        attempts += 1
        # Bounded, backed-off retries for this case only: the deadline or the count ends them.
        pause = _backoff(attempts)
        if (attempts > _CLOSED_BEFORE_BANNER_RETRIES or time.monotonic() + pause >= deadline
                or not _pause(turn, pause, deadline)):
            raise Failure(
                Status.CONNECTION_LOST,
                f"server closed the connection before its SSH banner ({attempts} attempts; "
                "sshd MaxStartups or a firewall?)",
            )


def _garbled_tunnel(error: BaseException, host: Host, client: paramiko.SSHClient,
                    retries: int) -> bool:
    """Whether a handshake through a bastion broke in a way worth one more channel.

    With a few hundred handshakes at once on one bastion connection, about 1 in 100
    sees its byte stream garbled ("Invalid packet blocking") or cut, a fault in
    paramiko's channel-as-socket path we have not pinned down. Nothing is
    authenticated yet, so nothing ran: a new channel is safe, and then succeeds.
    """
    transport = client.get_transport()
    return bool(host.via) and retries > 0 and isinstance(error, Failure) and (
        error.status in (Status.PROTOCOL_ERROR, Status.CONNECTION_LOST)) and not (
        transport is not None and transport.is_authenticated())


def _pause(turn: Turn | None, seconds: float, deadline: float) -> bool:
    """Sleep `seconds` without holding a handshake slot; False if none came back in time."""
    if turn is None:
        time.sleep(seconds)
        return True
    return turn.pause(seconds, deadline)


def _explain_proxy(failure: Failure, sock: object) -> None:
    """Say why, when the connection was a ProxyCommand that has ended."""
    if isinstance(sock, ProxySocket):
        said = sock.explain()
        if said:
            failure.message = f"{failure.message}; {said}" if failure.message else said


def _backoff(attempt: int) -> float:
    """Seconds before retry `attempt` (1, 2, ...): doubling from 0.2, at most 2, jittered."""
    return float(min(0.2 * 2 ** (attempt - 1), 2.0) * (1 + random.random()))  # noqa: S311


def _open_socket_retrying(host: Host, deadline: float, timeout: float,
                          retries: int, turn: Turn | None = None) -> socket.socket:
    """`_open_socket`, retrying a refused or unroutable connection `retries` times, with
    backoff, inside the connect deadline. Nothing has been sent yet, so a retry is safe."""
    attempt = 0
    while True:
        try:
            return _open_socket(host, deadline, timeout)
        except Failure as failure:
            attempt += 1
            retryable = failure.status is Status.UNREACHABLE and failure.retryable
            pause = _backoff(attempt)
            if (not retryable or attempt > retries or time.monotonic() + pause >= deadline
                    or not _pause(turn, pause, deadline)):
                if attempt > 1:
                    failure.message += f" ({attempt} attempts)"
                raise


def _open_socket(host: Host, deadline: float, timeout: float) -> socket.socket:
    try:
        sock = _create_connection(host, max(0.001, deadline - time.monotonic()))
        # Small SSH packets otherwise wait on delayed ACKs (about 40 ms each).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    except socket.gaierror as error:
        raise Failure(
            Status.UNREACHABLE, f"cannot resolve {host.address}: {error.strerror}"
        ) from None
    except TimeoutError:
        raise Failure(
            Status.TIMEOUT, f"TCP connect did not complete within {timeout:g}s"
        ) from None
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise Failure(
            Status.UNREACHABLE, f"cannot connect to port {host.port}: {reason}", retryable=True
        ) from None


_FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}


def _create_connection(host: Host, timeout: float) -> socket.socket:
    """`socket.create_connection`, limited to the host's AddressFamily (inet, inet6)."""
    family = _FAMILIES.get(host.address_family or "any", socket.AF_UNSPEC)
    if family == socket.AF_UNSPEC:
        return socket.create_connection((host.address, host.port or 22), timeout=timeout)
    error: OSError | None = None
    for found, kind, proto, _, address in socket.getaddrinfo(
            host.address, host.port or 22, family, socket.SOCK_STREAM):
        sock = socket.socket(found, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as failed:
            sock.close()
            error = failed
    raise error or OSError(f"no {host.address_family} address")


def _handshake(
    client: paramiko.SSHClient, sock: socket.socket | paramiko.Channel, host: Host,
    context: WorkerContext, alarm: Alarm, timeout: float, keys: list[paramiko.PKey],
    turn: Turn | None = None,
) -> None:
    options = context.options
    known = context.known_hosts(host)
    # paramiko looks the keys up as [address]:port (the address alone on 22); known_hosts
    # has them under known_hosts_name: the same name, unless HostKeyAlias says otherwise.
    looked_up = host.address if host.port in (None, 22) else f"[{host.address}]:{host.port}"
    # paramiko asks the server for the type of the first key added: an RSA host key costs
    # the sshd ~2 ms more per connection to sign with (bench/results/2026-11-30-algorithms
    # .md), and ssh-keyscan lists it first. Any recorded key is still accepted.
    entries = sorted(known.lookup(host.known_hosts_name),
                     key=lambda entry: entry[0].startswith(("ssh-rsa", "rsa-")))
    for key_type, key_b64 in entries:
        key = to_pkey(key_type, key_b64)
        if key is not None and key_b64 not in known.revoked:
            client.get_host_keys().add(looked_up, key_type, key)
    client.set_missing_host_key_policy(UnknownKeyPolicy(context, host, known))
    user = host.user or ""  # resolve() filled it
    # What ssh offers (see FleetAuth): configured keys, the agent's unless IdentitiesOnly,
    # and the default ~/.ssh/id_* files only when no key file is configured anywhere.
    agent_keys = () if host.identities_only else context.agent_keys(host)
    defaults = context.default_keys() if host.default_keys or (
        host.default_keys is None and not host.key_files) else []
    auth = FleetAuth(user, keys, agent_keys, options, defaults)
    remaining = max(0.001, alarm.deadline - time.monotonic())
    try:
        client.connect(
            host.address, port=host.port or 22, username=user, sock=sock, timeout=remaining,
            banner_timeout=remaining, auth_timeout=remaining, channel_timeout=remaining,
            allow_agent=False, look_for_keys=False, auth_strategy=auth,
            transport_factory=functools.partial(
                FleetTransport, on_banner=turn.release if turn is not None else None,
                run_on=context.transport_threads.hand),
        )
    except Failure:
        raise
    except WeakKeyExchange as error:
        raise Failure(Status.PROTOCOL_ERROR, str(error)) from None
    except paramiko.BadHostKeyException as error:
        raise Failure(
            Status.HOSTKEY_CHANGED,
            f"HOST KEY CHANGED for {host.known_hosts_name}: server offers "
            f"{error.key.get_name()} {fingerprint(error.key)}, known_hosts has "
            f"{error.expected_key.get_name()} {fingerprint(error.expected_key)}; refusing "
            "(possible man-in-the-middle, or the host was reinstalled)",
        ) from None
    except Exception as error:
        transport = client.get_transport()
        fleet = transport if isinstance(transport, FleetTransport) else None
        # paramiko's own wait for the key exchange ends at the same deadline as our alarm,
        # and may notice first (it then fails later, "No existing session"): a deadline
        # that has passed is a timeout, whoever noticed it.
        if alarm.fired or isinstance(error, BannerTimeout) or \
                time.monotonic() >= alarm.deadline - 0.05:
            what = "no SSH banner" if fleet and not fleet.banner_received else (
                "connect did not complete")
            raise Failure(Status.TIMEOUT, f"{what} within {timeout:g}s") from None
        if fleet is not None and fleet.closed_before_banner(error):
            raise _ClosedBeforeBanner() from None
        if isinstance(error, BannerTooLong):
            raise Failure(Status.PROTOCOL_ERROR, str(error)) from None
        if isinstance(error, paramiko.AuthenticationException):
            raise Failure(Status.AUTH_FAILED, _auth_failed(user, auth)) from None
        if isinstance(error, paramiko.SSHException):
            raise Failure(Status.PROTOCOL_ERROR, f"SSH handshake failed: {error}") from None
        if isinstance(error, EOFError | OSError):
            failure = Failure(Status.CONNECTION_LOST, "connection closed during the SSH handshake")
            _explain_proxy(failure, sock)
            raise failure from None
        raise
    transport = client.get_transport()
    if host.server_alive_interval and isinstance(transport, FleetTransport):
        transport.start_keepalive(host.server_alive_interval, host.server_alive_count_max)


def _auth_failed(user: str, auth: FleetAuth) -> str:
    """The auth_failed message: how many credentials the server refused, and why no more."""
    if not auth.tried:
        return (f"no credentials for user {user!r}: no key configured (--key, inventory "
                "key_files, IdentityFile), no usable ~/.ssh/id_* file, no agent key and no "
                "password")
    more = (" before the server closed the connection (sshd MaxAuthTries?); put the right "
            "key first with --key or IdentityFile, or use IdentitiesOnly") if auth.closed else ""
    return f"authentication failed for user {user!r} ({auth.tried} credential(s) tried{more})"
