#!/usr/bin/env python3
"""Prints the results that scripts/bench collected as Markdown tables.

Input: one JSON object per line, either a `voca bench --json` report or a
memory reading ({"label": ..., "rss_kib": ...}).
"""

import json
import sys

RPC = {
    "direct": "PoolNode/Process",
    "gateway": "Gateway/SendMessage, then PoolNode/Process",
    "haproxy": "PoolNode/Process through HAProxy",
    "nginx": "PoolNode/Process through nginx",
}


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def mib(kib):
    return "exited" if kib is None else f"{kib / 1024:.1f} MiB"


def latency(report, key):
    value = report.get("latency_ms", {}).get(key)
    return "-" if value is None else f"{value:.2f}"


def median_rounds(rows):
    """Groups `kind/path[/round]` reports by path and returns, per path in
    first-seen order, the report of the median round by throughput and all
    of the path's rounds."""
    paths = {}
    for r in rows:
        path = r["label"].split("/")[1]
        paths.setdefault(path, []).append(r)
    result = []
    for path, rounds in paths.items():
        ordered = sorted(rounds, key=lambda r: r["messages_per_second"])
        result.append((path, ordered[(len(ordered) - 1) // 2], rounds))
    return result


def path_table(reports, kind):
    rows = [r for r in reports if r["label"].startswith(kind + "/")]
    if not rows:
        return
    grouped = median_rounds(rows)
    base = next((median for path, median, _ in grouped if path == "direct"), None)
    rounds = len(grouped[0][2])
    rounds_note = f"median of {rounds} alternating rounds" if rounds > 1 else "one run"

    print(f"\n{rows[0]['mode']}, {rows[0]['vendors']:,} vendors, {rows[0]['seconds']:.0f} s each, {rounds_note}\n")
    print("| path | RPC | msg/s | each round | vs direct | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | failed, all rounds | vendors on 2+ pools, worst round |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path, r, all_rounds in grouped:
        ratio = "-"
        if base and base["messages_per_second"] > 0:
            ratio = f"{r['messages_per_second'] / base['messages_per_second']:.2f}"
        round_rates = ", ".join(f"{x['messages_per_second']:,.0f}" for x in all_rounds)
        failed = sum(x["failed"] for x in all_rounds)
        split = max(x["vendors_on_several_pools"] for x in all_rounds)
        print(
            f"| {path} | {RPC.get(path, r['path'])} | {r['messages_per_second']:,.0f} | {round_rates} | {ratio} "
            f"| {latency(r, 'p50')} | {latency(r, 'p95')} | {latency(r, 'p99')} | {latency(r, 'p99.9')} "
            f"| {latency(r, 'max')} | {failed} | {split} of {r['vendors_answered']:,} |"
        )

    if base:
        for path, r, _ in grouped:
            if path == "direct" or not r.get("latency_ms") or not base.get("latency_ms"):
                continue
            extra = {k: r["latency_ms"][k] - base["latency_ms"][k] for k in ("p50", "p99")}
            print(f"\n{path}: p50 {extra['p50']:+.2f} ms, p99 {extra['p99']:+.2f} ms against direct", end="")
        print()

    for r in rows:
        if r["errors"]:
            print(f"\n{r['label']} errors: {r['errors']}")


def scale_table(reports):
    cold = {r["label"].split("/")[1]: r for r in reports if r["label"].startswith("cold/")}
    warm = {r["label"].split("/")[1]: r for r in reports if r["label"].startswith("warm/")}
    if not cold:
        return
    print("\nEnd to end through the gateway, closed loop, 64 callers; each message to a different vendor\n")
    print("| vendors | pass | messages | msg/s | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | failed |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count in sorted(cold, key=int):
        for name, r in (("cold", cold[count]), ("warm", warm.get(count))):
            if r is None:
                continue
            print(
                f"| {int(count):,} | {name} | {r['succeeded'] + r['failed']:,} | {r['messages_per_second']:,.0f} "
                f"| {latency(r, 'p50')} | {latency(r, 'p95')} | {latency(r, 'p99')} | {latency(r, 'p99.9')} "
                f"| {latency(r, 'max')} | {r['failed']} |"
            )


def pool_memory_table(reports):
    pools = [r for r in reports if r["label"].startswith("pool-rss/")]
    if pools:
        print("\nPool node RSS after the warm pass (character cache budget 256 MiB per node)\n")
        print("| vendors | " + " | ".join(sorted({r["pool"] for r in pools})) + " |")
        print("|---:|" + "---:|" * len({r["pool"] for r in pools}))
        for count in sorted({r["label"].split("/")[1] for r in pools}, key=int):
            row = sorted((r for r in pools if r["label"] == f"pool-rss/{count}"), key=lambda r: r["pool"])
            print(f"| {int(count):,} | " + " | ".join(mib(r["rss_kib"]) for r in row) + " |")


def gateway_memory_table(reports):
    gateway = {r["label"].split("/")[1]: r for r in reports if r["label"].startswith("gateway-rss/")}
    loads = {r["label"].split("/")[1]: r for r in reports if r["label"].startswith("gateway-load/")}
    if gateway:
        print("\nGateway RSS: a fresh gateway, then after a uniform load over each vendor count\n")
        print("| after | RSS | messages in the load | distinct vendors answered |")
        print("|---|---:|---:|---:|")
        for key, r in gateway.items():
            load_report = loads.get(key)
            sent = f"{load_report['succeeded']:,}" if load_report else "-"
            seen = f"{load_report['vendors_answered']:,}" if load_report else "-"
            name = "start" if key == "start" else f"{int(key):,} vendors"
            print(f"| {name} | {mib(r['rss_kib'])} | {sent} | {seen} |")

        counts = sorted((k for k in gateway if k != "start"), key=int)
        if len(counts) >= 2 and None not in (gateway[counts[0]]["rss_kib"], gateway[counts[-1]]["rss_kib"]):
            growth = (gateway[counts[-1]]["rss_kib"] - gateway[counts[0]]["rss_kib"]) / 1024
            print(f"\nGrowth from {int(counts[0]):,} to {int(counts[-1]):,} vendors: {growth:+.1f} MiB")


def main():
    reports = load(sys.argv[1])
    path_table(reports, "closed")
    path_table(reports, "open")
    for r in reports:
        if r["label"].startswith("zipf/"):
            print(
                f"\nZipf (s = 1) over {r['vendors']:,} vendors through the gateway, {r['mode']}: "
                f"{r['messages_per_second']:,.0f} msg/s, p50 {latency(r, 'p50')} ms, "
                f"p99 {latency(r, 'p99')} ms, failed {r['failed']}"
            )
    scale_table(reports)
    pool_memory_table(reports)
    gateway_memory_table(reports)


if __name__ == "__main__":
    main()
