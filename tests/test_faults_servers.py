"""The loopback fault servers do what they promise, seen by raw sockets and by paramiko.

The paramiko cases also pin down what a plain client raises for each fault
(research/faults.md §3), so fleetexec's own mapping has a known starting point.
Timeouts here are short deadlines that keep tests fast; nothing asserts on time.
"""

from __future__ import annotations

import socket
import threading
import time

import paramiko
import pytest

from fleetexec.testing.faults import BANNER, FaultKind, FaultServer, closed_port

ADDR = "127.0.3.1"  # any 127.x.y.z is a distinct host; not the default 127.0.0.1


def paramiko_error(
    srv: FaultServer | None, port: int = 0, *, timeout: float = 2.0, banner_timeout: float = 2.0,
) -> tuple[BaseException, paramiko.Transport | None]:
    """Connect a plain, strict paramiko client; return what it raised and its transport."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            srv.address if srv else "127.0.0.1", srv.port if srv else port, username="nobody",
            timeout=timeout, banner_timeout=banner_timeout, auth_timeout=1.0,
            look_for_keys=False, allow_agent=False,
        )
    except Exception as exc:  # noqa: BLE001 - the exception is the result under test
        return exc, client.get_transport()
    finally:
        client.close()
    raise AssertionError("paramiko connected to a fault server")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock: socket.socket) -> bytes:
    return b"".join(iter(lambda: sock.recv(65536), b""))


def assert_silent(sock: socket.socket, wait: float = 0.2) -> None:
    sock.settimeout(wait)
    with pytest.raises(TimeoutError):
        sock.recv(1)


def test_closed_port_refuses() -> None:
    port = closed_port(ADDR)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ADDR, port), timeout=1).close()
    exc, _ = paramiko_error(None, port)
    assert isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError)


def test_refuses_non_loopback_and_unknown_kind() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultServer("tarpit", "10.0.0.1")
    with pytest.raises(ValueError, match="loopback"):
        closed_port("192.0.2.1")
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultServer("nonsense")  # type: ignore[arg-type]


def test_tarpit_accepts_and_never_speaks() -> None:
    with FaultServer("tarpit", ADDR) as srv, socket.create_connection(
        (srv.address, srv.port), timeout=1
    ) as sock:
        sock.sendall(b"SSH-2.0-probe\r\n")  # it reads and discards, still silent
        assert_silent(sock)
    with FaultServer("tarpit", ADDR) as srv:
        exc, _ = paramiko_error(srv, timeout=2.0, banner_timeout=0.5)
    assert isinstance(exc, paramiko.SSHException)
    assert "Error reading SSH protocol banner" in str(exc)


def test_blackhole_raw_connect_times_out() -> None:
    with FaultServer("blackhole", ADDR) as srv:
        for _ in range(2):  # the accept queue stays full: every SYN is dropped
            with pytest.raises(TimeoutError):
                socket.create_connection((srv.address, srv.port), timeout=0.5).close()


def test_blackhole_paramiko_connect_times_out() -> None:
    with FaultServer("blackhole", ADDR) as srv:
        exc, _ = paramiko_error(srv, timeout=1.0)
    assert isinstance(exc, TimeoutError)


@pytest.mark.parametrize(
    ("kind", "exc_type", "message"),
    [
        ("http", paramiko.SSHException, "Error reading SSH protocol banner"),
        ("binary", paramiko.SSHException, "Error reading SSH protocol banner"),
        # The server's escape sequence arrives verbatim inside the exception text.
        ("lines", paramiko.SSHException,
         'Indecipherable protocol version "220 not ssh \x1b]0;pwned-by-banner\x07 line 99"'),
        ("ssh1", paramiko.ssh_exception.IncompatiblePeer, "1.5 instead of 2.0"),
        ("bad-packet", paramiko.SSHException, "Invalid packet blocking"),
    ],
)
def test_garbage_fails_paramiko_at_once(
    kind: FaultKind, exc_type: type[Exception], message: str,
) -> None:
    with FaultServer(kind, ADDR) as srv:
        exc, _ = paramiko_error(srv)
    assert isinstance(exc, exc_type)
    assert message in str(exc)


def test_http_and_binary_bytes_then_close() -> None:
    with FaultServer("http", ADDR) as srv, socket.create_connection((ADDR, srv.port)) as s:
        assert recv_all(s).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    with FaultServer("binary", ADDR) as srv:
        blobs = []
        for _ in range(2):
            with socket.create_connection((ADDR, srv.port), timeout=2) as s:
                blobs.append(recv_all(s))
    assert len(blobs[0]) == 4096 and blobs[0] == blobs[1]  # deterministic
    assert not blobs[0].startswith(b"SSH-")


def test_junk_lines_then_silence() -> None:
    with FaultServer("lines", ADDR) as srv, socket.create_connection((ADDR, srv.port)) as s:
        f = s.makefile("rb")
        lines = [f.readline() for _ in range(200)]
        assert lines[7] == b"220 not ssh \x1b]0;pwned-by-banner\x07 line 7\r\n"
        assert all(b"\x1b]0;" in line for line in lines)
        assert_silent(s)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("ssh1", b"SSH-1.5-OpenSSH_1\r\n"), ("banner-silence", BANNER),
     ("bad-packet", BANNER + b"\xff" * 64)],
)
def test_banner_kinds_raw(kind: FaultKind, expected: bytes) -> None:
    with FaultServer(kind, ADDR) as srv, socket.create_connection((ADDR, srv.port), 2) as s:
        assert recv_exact(s, len(expected)) == expected
        assert_silent(s)


def test_banner_then_silence_paramiko() -> None:
    with FaultServer("banner-silence", ADDR) as srv:
        exc, transport = paramiko_error(srv, timeout=1.0, banner_timeout=1.0)
    # Banner accepted, key exchange never answered: start_client's deadline.
    assert isinstance(exc, paramiko.SSHException) and str(exc) == "No existing session"
    assert transport is not None and transport.remote_version == BANNER.decode().strip()


def test_no_newline_raw_and_paramiko() -> None:
    with FaultServer("no-newline", ADDR, cap=10_000) as srv:
        with socket.create_connection((ADDR, srv.port), 2) as s:
            data = recv_exact(s, 8 + 10_000)
            assert data.startswith(b"SSH-2.0-") and len(data) == 10_008
            assert b"\n" not in data
            assert_silent(s)  # the cap was reached: no more bytes
        exc, _ = paramiko_error(srv, timeout=2.0, banner_timeout=0.5)
    assert isinstance(exc, paramiko.SSHException)
    assert "Error reading SSH protocol banner" in str(exc)


def test_slow_drip_sends_one_byte_at_a_time() -> None:
    with FaultServer("slow-drip", ADDR, interval=0.02) as srv:
        with socket.create_connection((ADDR, srv.port), 2) as s:
            chunks = [s.recv(64) for _ in range(len(BANNER))]
        assert b"".join(chunks) == BANNER
        # Each byte restarted paramiko's banner timer (0.3 s < the ~0.4 s
        # drip), so it read the whole banner and then hit the kex deadline.
        exc, transport = paramiko_error(srv, timeout=1.0, banner_timeout=0.3)
    assert str(exc) == "No existing session"
    assert transport is not None and transport.remote_version == BANNER.decode().strip()


def test_endless_drip_never_ends_the_line() -> None:
    with FaultServer("slow-drip", ADDR, interval=0.005, endless=True) as srv:
        with socket.create_connection((ADDR, srv.port), 2) as s:
            data = recv_exact(s, len(BANNER) + 10)
        assert data.startswith(BANNER[:-2] + b"x") and b"\n" not in data
        exc, _ = paramiko_error(srv, timeout=1.0, banner_timeout=0.3)
    assert str(exc) == "No existing session"  # the banner timer never fired


def test_concurrent_connections_idle_cheaply_and_stop_cleanly() -> None:
    with FaultServer("ssh1", ADDR) as srv:
        socks = [socket.create_connection((ADDR, srv.port), 2) for _ in range(20)]
        try:
            assert all(recv_exact(s, 19) == b"SSH-1.5-OpenSSH_1\r\n" for s in socks)
            cpu = time.process_time()
            threading.Event().wait(0.3)  # 20 idle connections: threads must block, not spin
            assert time.process_time() - cpu < 0.15
            assert srv.accepted == 20
        finally:
            for s in socks:
                s.close()
    assert srv.alive_threads == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ADDR, srv.port), timeout=1).close()


def test_stop_wakes_a_sender_blocked_on_a_client_that_never_reads() -> None:
    srv = FaultServer("no-newline", ADDR, cap=64 * 1024 * 1024)
    with srv, socket.create_connection((ADDR, srv.port), 2) as s:
        recv_exact(s, 1)  # connected and sending; now we stop reading
    srv.stop()  # idempotent
    assert srv.alive_threads == 0
