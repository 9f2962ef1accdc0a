"""The Markdown report of `bench.py`'s records: one table per (command, N), peers as rows."""

from __future__ import annotations

import statistics
from typing import Any


def spread(values: list[float], digits: int = 2) -> str:
    """median [min–max], or the one value."""
    if not values:
        return "–"
    med = f"{statistics.median(values):.{digits}f}"
    if len(values) == 1:
        return med
    return f"{med} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def report(records: list[dict[str, Any]]) -> str:
    """The Markdown tables: one per (command, N), peers as rows."""
    meta = records[0]["meta"]
    runs = [r for r in records[1:] if "peer" in r]
    out = [f"## fleetexec bench, {meta['date']}", "",
           f"Machine: {meta['nproc']} CPUs ({meta['cpu']}), kernel {meta['kernel']}, "
           f"Python {meta['python']}; fleetexec git {meta['fleetexec_git']}.",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
           "", "Negotiated KEX / client-to-server cipher (one probe connection each): "
           + "; ".join(f"{k}: {v}" for k, v in meta.get("kex", {}).items()) + ".", "",
           "Host key check (known_hosts with a wrong key for both of 2 hosts): "
           + "; ".join(f"{k}: {v}" for k, v in meta.get("strict", {}).items()) + ".", "",
           "Cells: median [min–max] over repeats (peak RSS, sshd/other CPU, listen overflows: "
           "median only). Client CPU = user+sys of the client's whole "
           "process tree; peak RSS = the largest single process of the tree. Ratios = "
           f"{meta['reference']} ÷ peer (medians); < 1.00 means fleetexec is faster / cheaper. "
           "`!` = some run lost hosts (see Failures). Other CPU = the rest of the machine "
           "during the run (driver, other processes: noise).", ""]
    failures: list[str] = []
    for command in dict.fromkeys(r["command"] for r in runs):
        for n in sorted({r["n"] for r in runs if r["command"] == command}):
            group = [r for r in runs if r["command"] == command and r["n"] == n]
            out += [f"### `{group[0]['label']}`, N={n}", "",
                    "| peer | hosts ok | wall s | client CPU s | CPU ms/host | peak RSS MiB "
                    "| sshd CPU s | other CPU s | listen ovf | wall ratio | CPU ratio |",
                    "|---|---|---|---|---|---|---|---|---|---|---|"]
            ref = [r for r in group if r["peer"] == meta["reference"] and "skipped" not in r]
            for peer in dict.fromkeys(r["peer"] for r in group):
                mine = [r for r in group if r["peer"] == peer]
                done = [r for r in mine if "skipped" not in r]
                if not done:
                    out.append(f"| {peer} | {mine[0]['skipped']} |" + " |" * 9)
                    continue
                out.append("| " + " | ".join([peer, _hosts_cell(done, n), *_cells(done, ref, n)])
                           + " |")
                for r in done:
                    for text, count in r["errors"].items():
                        failures.append(f"- {peer}, `{group[0]['label']}`, N={n}, repeat "
                                        f"{r['repeat']}: {count} × {text}")
                    if r["leaked"] or (r["rc"] != 0 and r["ok"] == n) or (
                            peer == "fleetexec-cli" and r["rc"] == 0 and r["ok"] < n):
                        failures.append(f"- {peer}, N={n}, repeat {r['repeat']}: client exit "
                                        f"code {r['rc']}, leaked processes {r['leaked']}")
            out.append("")
    busy = [(r["other_cpu"], r["wall"] * meta["nproc"]) for r in runs if "skipped" not in r]
    share = sum(o for o, _ in busy) / max(1e-9, sum(w for _, w in busy))
    if share > 0.05:
        out += [f"**Noise:** during the measured runs the rest of the machine used {share:.0%} "
                "of its CPU capacity (see `other CPU s`); compare ratios, not absolute times.", ""]
    loads = [r["load"] for r in runs if "load" in r]
    if loads:
        out += [f"Load average (1 min) before each run: {min(loads):.1f}–{max(loads):.1f} "
                f"(median {statistics.median(loads):.1f}).", ""]
    if failures:
        out += ["### Failures (error texts as the clients reported them)", "", *failures, ""]
    return "\n".join(out)


def _hosts_cell(done: list[dict[str, Any]], n: int) -> str:
    oks = [r["ok"] for r in done]
    if all(ok == n for ok in oks):
        return f"{n}/{n}"
    return f"! {','.join(map(str, oks))} of {n}"


def _cells(done: list[dict[str, Any]], ref: list[dict[str, Any]], n: int) -> list[str]:
    def get(key: str, runs: list[dict[str, Any]] = done) -> list[float]:
        return [r[key] for r in runs]

    def ratio(key: str) -> str:
        if not ref or done[0]["peer"] == ref[0]["peer"]:
            return "–"
        return f"{statistics.median(get(key, ref)) / statistics.median(get(key)):.2f}"

    def median(key: str, digits: int = 2) -> str:  # secondary columns: no spread, less clutter
        return f"{statistics.median(get(key)):.{digits}f}"

    return [spread(get("wall")), spread(get("cpu")), spread([c * 1000 / n for c in get("cpu")], 1),
            median("maxrss_mib", 0), median("sshd_cpu"), median("other_cpu"),
            median("overflows", 0), ratio("wall"), ratio("cpu")]
