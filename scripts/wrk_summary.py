#!/usr/bin/env python3
"""Medians of the load scripts' wrk runs, as a Markdown table, and ratios.

usage: wrk_summary.py RESULTS NAME... [--ratio A/B ...]

RESULTS has lines "name req/s p50 p99 non-2xx" (scripts/wrk_lib.sh writes
them). NAMEs are the rows, in order; each --ratio A/B prints the ratio of
A's median req/s to B's.
"""
import statistics
import sys

args = sys.argv[1:]
results, names, ratios = args[0], [], []
rest = iter(args[1:])
for a in rest:
    if a == "--ratio":
        ratios.append(next(rest).split("/"))
    else:
        names.append(a)


def ms(v):
    if v.endswith("ms"):
        return float(v[:-2])
    if v.endswith("us"):
        return float(v[:-2]) / 1000
    return float(v[:-1]) * 1000


agg = {}
for line in open(results):
    name, rps, p50, p99, errs = line.split()
    a = agg.setdefault(name, {"rps": [], "p50": [], "p99": [], "errs": 0})
    a["rps"].append(float(rps))
    a["p50"].append(ms(p50))
    a["p99"].append(ms(p99))
    a["errs"] += int(errs)
med = {n: statistics.median(a["rps"]) for n, a in agg.items()}
print("| target | req/s (median) | p50 ms | p99 ms | non-2xx |")
print("|---|---:|---:|---:|---:|")
for n in names:
    a = agg[n]
    print(f"| {n} | {med[n]:,.0f} | {statistics.median(a['p50']):.2f} | {statistics.median(a['p99']):.2f} | {a['errs']} |")
print()
for a, b in ratios:
    print(f"{a} / {b} throughput: {med[a] / med[b]:.2f}")
