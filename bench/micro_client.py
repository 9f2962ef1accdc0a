"""CPU of single per-host steps of the client, alone (one thread, no sshd): µs per host.

    python bench/micro_client.py

Each step is timed with `time.process_time`, best of 5 rounds of `--number` calls, in a
quiet thread: what the step costs without the contention of a run (the profile,
`profile_client.py`, shows what it costs inside one). Steps: a thread started and joined
(paramiko starts one per connection, the in-process runner one per session slot), the
objects paramiko builds per connection (SSHClient + known key + Transport), the known_hosts
lookup fleetexec does, the worker messages of the process backend (Work to the worker,
Finished with the HostResult back: pickled and unpickled), a host key verification and the
auth signature (ed25519), and one AES-GCM packet each way.
"""

from __future__ import annotations

import argparse
import os
import pickle
import socket
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fleetexec import Host
from fleetexec.backends.worker import Finished, Work
from fleetexec.results import HostResult, Status
from fleetexec.ssh.hostkeys import KnownHosts, to_pkey
from fleetexec.ssh.transport import FleetTransport


def best(fn: Callable[[], object], number: int) -> float:
    """µs per call, best of 5 rounds, process CPU time."""
    timer = timeit.Timer(fn, timer=time.process_time)
    return min(timer.repeat(5, number)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=300)
    number = parser.parse_args().number
    rows: list[tuple[str, float]] = []

    def thread() -> None:
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
    rows.append(("thread start + join (empty target)", best(thread, number)))

    with tempfile.TemporaryDirectory() as tmp:
        from fleetexec.testing.sshd import _keypair

        public = _keypair(Path(tmp) / "k", "bench").split()
        kh = Path(tmp) / "known_hosts"
        kh.write_text("".join(f"[127.0.{i // 250}.{i % 250 + 1}]:2222 {public[0]} {public[1]}\n"
                              for i in range(1000)))
        known = KnownHosts.load([str(kh)])
        rows.append(("known_hosts lookup + to_pkey (1000-line file, parsed once)", best(
            lambda: [to_pkey(t, b) for t, b in known.lookup("[127.0.1.7]:2222")], number)))
        pkey = to_pkey(public[0], public[1])
        assert pkey is not None

        def client_objects() -> None:
            client = paramiko.SSHClient()
            client.get_host_keys().add("[127.0.1.7]:2222", public[0], pkey)
            client.get_host_keys().get("[127.0.1.7]:2222")  # SSHClient.connect looks it up
            a, b = socket.socketpair()
            FleetTransport(a)
            a.close()
            b.close()
        rows.append(("SSHClient + known key + FleetTransport objects (no I/O)", best(
            client_objects, number)))

    host = Host("web01", address="127.0.1.7", port=2222, user="root",
                key_files=("/root/.ssh/id_ed25519",))
    work = Work(1, 7, host, "true", False)
    result = HostResult(host="web01", status=Status.OK, exit_code=0, signal=None, stdout=b"",
                        stderr=b"", stdout_truncated=False, stderr_truncated=False,
                        started=time.time(), duration=0.0123, error=None)
    rows.append(("worker messages: Work + Finished pickled and unpickled", best(
        # our own objects, made just above: nothing untrusted is unpickled
        lambda: (pickle.loads(pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)),  # noqa: S301
                 pickle.loads(pickle.dumps(Finished(1, 7, result),  # noqa: S301
                                           protocol=pickle.HIGHEST_PROTOCOL))), number)))

    from nacl.signing import SigningKey

    signing = SigningKey.generate()
    signed = signing.sign(os.urandom(32))
    rows.append(("ed25519 verify (host key, PyNaCl as paramiko uses it)", best(
        lambda: signing.verify_key.verify(signed), number)))
    rows.append(("ed25519 sign (auth signature)", best(lambda: signing.sign(b"x" * 100), number)))
    gcm, nonce, packet = AESGCM(os.urandom(16)), os.urandom(12), os.urandom(64)
    sealed = gcm.encrypt(nonce, packet, b"hdr!")
    rows.append(("AES-GCM: encrypt + decrypt one 64-byte packet", best(
        lambda: (gcm.encrypt(nonce, packet, b"hdr!"), gcm.decrypt(nonce, sealed, b"hdr!")),
        number)))
    print("| step (alone, one thread) | CPU µs |\n|---|---|")
    for name, micros in rows:
        print(f"| {name} | {micros:.1f} |")
    print(f"\nload average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
