#!/usr/bin/env python3
"""Medians of the load scripts' wrk runs, as a Markdown table, and ratios.

usage: wrk_summary.py RESULTS NAME... [--ratio A/B ...]

RESULTS has lines "name req/s p50 p99 non-2xx [cpu-us-per-request]"
(scripts/wrk_lib.sh writes them). NAMEs are the rows, in order; each
--ratio A/B prints the ratio of A's median req/s to B's, and of their
median CPU per request when both have one.
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
    name, rps, p50, p99, errs, *cpu = line.split()
    a = agg.setdefault(name, {"rps": [], "p50": [], "p99": [], "errs": 0, "cpu": []})
    a["rps"].append(float(rps))
    a["p50"].append(ms(p50))
    a["p99"].append(ms(p99))
    a["errs"] += int(errs)
    if cpu and float(cpu[0]) > 0:
        a["cpu"].append(float(cpu[0]))
med = {n: statistics.median(a["rps"]) for n, a in agg.items()}
cpu = {n: statistics.median(a["cpu"]) if a["cpu"] else None for n, a in agg.items()}
print("| target | req/s (median) | p50 ms | p99 ms | non-2xx | CPU µs/request |")
print("|---|---:|---:|---:|---:|---:|")
for n in names:
    a = agg[n]
    c = f"{cpu[n]:.1f}" if cpu[n] is not None else "–"
    print(f"| {n} | {med[n]:,.0f} | {statistics.median(a['p50']):.2f} | {statistics.median(a['p99']):.2f} | {a['errs']} | {c} |")
print()
for a, b in ratios:
    line = f"{a} / {b} throughput: {med[a] / med[b]:.2f}"
    if cpu[a] and cpu[b]:
        line += f"; CPU per request: {cpu[a] / cpu[b]:.2f}"
    print(line)
