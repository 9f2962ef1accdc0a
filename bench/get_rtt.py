"""A file download on a new connection at a distance: `FleetSession.get` through the delay proxy.

    python bench/get_rtt.py --rtt 0.1 --mib 10 [--baseline-src /path/to/other/tree/src]

One real sshd, one host reached through `delayproxy.py` at `--rtt`; each run is a
fresh process (a new connection), so the SFTP channel is the session channel
opened behind the authentication. Prints wall seconds per run for this tree and,
with `--baseline-src`, for another tree in the same run, alternating.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleetexec.testing.sshd import OpenSSHServer

HERE = Path(__file__).resolve().parent
ONE_RUN = r'''
import sys, time, fleetexec
from fleetexec.backends.inprocess import InProcessBackend
inventory, source, out = sys.argv[1:4]
hosts = fleetexec.load_inventory(inventory).select()
with fleetexec.FleetSession(hosts, system_known_hosts=False, backend=InProcessBackend()) as s:
    begin = time.perf_counter()
    result = s.get(source, out, force=True)
    print(f"{time.perf_counter() - begin:.2f} {[r.status.value for r in result.values()]}")
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt", type=float, default=0.1)
    parser.add_argument("--mib", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline-src", help="another fleetexec tree's src directory")
    args = parser.parse_args()
    trees = {"this tree": str(HERE.parent / "src")}
    if args.baseline_src:
        trees["baseline"] = args.baseline_src
    with OpenSSHServer() as sshd, tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "file"
        source.write_bytes(os.urandom(args.mib * 1024 * 1024))
        with socket.socket() as probe:  # a free port for the proxy on the host's address
            probe.bind(("127.0.3.1", 0))
            port = probe.getsockname()[1]
        proxy = subprocess.Popen([sys.executable, str(HERE / "delayproxy.py"), "--rtt",
                                  str(args.rtt), "--listen", "127.0.3.1", "--port", str(port),
                                  "--upstream-port", str(sshd.port)])
        try:
            time.sleep(1.0)
            inventory = sshd.write_inventory(Path(tmp) / "inventory.yaml", ["127.0.3.1"],
                                             known_hosts=Path(tmp) / "known_hosts")
            inventory.write_text(inventory.read_text().replace(f"port: {sshd.port}",
                                                               f"port: {port}"))
            known = Path(tmp) / "known_hosts"
            known.write_text(known.read_text().replace(f"]:{sshd.port} ", f"]:{port} "))
            print(f"{args.mib} MiB get, one host, RTT {args.rtt * 1000:g} ms, new connection")
            for repeat in range(args.repeats):
                for name, src in trees.items():
                    out = Path(tmp) / f"out-{repeat}-{len(name)}"
                    done = subprocess.run(
                        [sys.executable, "-c", ONE_RUN, str(inventory), str(source), str(out)],
                        capture_output=True, text=True, check=False,
                        env={**os.environ, "PYTHONPATH": src})
                    print(f"{name}: {done.stdout.strip() or done.stderr.strip()[-200:]}")
        finally:
            proxy.terminate()
            proxy.wait()


if __name__ == "__main__":
    main()
