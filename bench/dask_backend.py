"""The Dask backend against the local one: the same run, on one machine, one real sshd.

One OpenSSH sshd serves N loopback hosts. Alternating, `repeats` times:
- `fleetexec.run(...)` on the default local `ProcessBackend`;
- the same on `DaskBackend` over a `LocalCluster` of `--workers` processes (one thread
  each), shards of `--shard-size` hosts; the cluster is started once, outside the timing.
Prints median wall seconds of each and the overhead of Dask (dask / local - 1). Both
share the machine's cores: this measures what Dask adds, not what more machines buy.

    python bench/dask_backend.py [--n 500] [--workers 2] [--shard-size 250] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import fleetexec
from fleetexec.testing.sshd import OpenSSHServer, addresses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--command", default="true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import distributed

    from fleetexec.backends.dask import DaskBackend

    seconds: dict[str, list[float]] = {"local": [], "dask": []}
    with OpenSSHServer(max_startups="4000:30:8000") as sshd, \
            tempfile.TemporaryDirectory() as tmp, \
            distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, host="127.0.0.1",
                                     dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        hosts = fleetexec.load_inventory(
            sshd.write_inventory(Path(tmp) / "inventory.yaml", addresses(args.n))).select()
        backends = {"local": lambda: None,
                    "dask": lambda: DaskBackend(client, shard_size=args.shard_size)}
        fleetexec.run(hosts[:1], "true", system_known_hosts=False,
                      backend=backends["dask"]())  # warm the workers' imports
        for _ in range(args.repeats):
            for name, make in backends.items():
                begin = time.perf_counter()
                result = fleetexec.run(hosts, args.command, system_known_hosts=False,
                                       backend=make())
                seconds[name].append(time.perf_counter() - begin)
                print(f"{name}: {seconds[name][-1]:.2f} s, ok {len(result.succeeded)}/{args.n}",
                      file=sys.stderr)
    local, dask = (statistics.median(seconds[k]) for k in ("local", "dask"))
    print(f"N = {args.n}, `{args.command}`, {args.workers} Dask workers, shards of "
          f"{args.shard_size}, median of {args.repeats}")
    print(f"local ProcessBackend: {local:.2f} s")
    print(f"DaskBackend (LocalCluster): {dask:.2f} s  (overhead {dask / local - 1:+.0%})")


if __name__ == "__main__":
    main()
