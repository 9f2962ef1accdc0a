"""fleetexec through its Python API: ``fleetexec.run(inventory.select(), CMD, ...)``.

(No ``if __name__ == "__main__":`` guard is needed since 0.2; kept as plain style.)
"""

from __future__ import annotations

from collections import Counter

from peer_common import parse_args, report

import fleetexec


def main() -> None:
    """Run the command on every inventory host and report how many ended ok."""
    args = parse_args(__doc__ or "")
    inventory = fleetexec.load_inventory(args.inventory)
    result = fleetexec.run(
        inventory.select(), args.command, system_known_hosts=False, command_timeout=120,
        connect_timeout=60,
    )
    errors: Counter[str] = Counter(
        f"{r.status}: {r.error}" for r in result.values() if not r.ok
    )
    nbytes = sum(len(r.stdout) for r in result.values())
    report(sum(r.ok for r in result.values()), len(result), errors, nbytes)


if __name__ == "__main__":
    main()
