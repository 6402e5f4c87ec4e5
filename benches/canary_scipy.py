#!/usr/bin/env python3
"""Judge the canary benchmark request with scipy.stats.mannwhitneyu, for comparison.

Reads the request that `cargo bench --bench canary_judge` writes with CANARY_BENCH_DUMP=FILE
(100 metrics x 1,000 points per scope) and runs the same judgment per metric in Python: NaN
removal, descriptive statistics, the two-sided Mann-Whitney test with continuity correction
(asymptotic, as Kayenta's normal approximation), the mean-ratio effect size, High when the shift
is significant at 98 % and upwards, then group scores and the summary score. scipy gives a
p-value rather than Kayenta's confidence interval, so labels may differ on borderline metrics;
the script reports how many agree with `bowline canary judge` when --bowline is given.

Usage: python3 benches/canary_scipy.py FILE [--bowline target/release/bowline] [--runs 20]
Prints the median and minimum wall time of one judgment in milliseconds. Not part of CI.
"""
import argparse
import json
import math
import statistics
import subprocess
import time

import numpy as np
from scipy.stats import mannwhitneyu

ALPHA = 1.0 - 0.98


def judge(metrics, data):
    labels = {}
    groups = {}
    for m in metrics:
        name = m["name"]
        series = data.get(name, {})
        x = np.array([v for v in series.get("experiment", []) if v is not None and not math.isnan(v)], dtype=float)
        y = np.array([v for v in series.get("control", []) if v is not None and not math.isnan(v)], dtype=float)
        for s in (x, y):  # the descriptive statistics of the report
            if len(s):
                s.min(), s.max(), s.mean(), s.std(ddof=1)
        if len(x) == 0 or len(y) == 0:
            label = "Nodata"
        else:
            p = mannwhitneyu(x, y, alternative="two-sided", use_continuity=True, method="asymptotic").pvalue
            ratio = x.mean() / y.mean() if y.mean() != 0 and x.mean() != 0 else float("nan")
            direction = m["analysisConfigurations"]["canary"].get("direction", "either")
            if p < ALPHA and np.median(x) > np.median(y) and direction in ("increase", "either") and not ratio < 1.0:
                label = "High"
            elif p < ALPHA and np.median(x) < np.median(y) and direction in ("decrease", "either") and not ratio > 1.0:
                label = "Low"
            else:
                label = "Pass"
        labels[name] = label
        for g in m["groups"]:
            ok, n = groups.get(g, (0, 0))
            if label != "Nodata":
                groups[g] = (ok + (label == "Pass"), n + 1)
    scores = {g: (100.0 * ok / n if n else 100.0) for g, (ok, n) in groups.items()}
    score = round(sum(scores.values()) / len(scores), 2) if scores else 0.0
    return labels, score


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("request")
    ap.add_argument("--bowline", help="bowline binary, to compare labels")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    request = json.load(open(args.request))
    metrics, data = request["config"]["metrics"], request["data"]
    judge(metrics, data)  # warm-up
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        labels, score = judge(metrics, data)
        times.append((time.perf_counter() - t) * 1000.0)
    print("scipy_median_ms %.3f" % statistics.median(times))
    print("scipy_min_ms %.3f" % min(times))
    print("scipy_score %.2f" % score)
    if args.bowline:
        out = subprocess.run([args.bowline, "canary", "judge", args.request], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout)
        theirs = {r["name"]: r["classification"] for r in result["results"]}
        agree = sum(1 for k, v in labels.items() if theirs.get(k) == v)
        print("labels_agreeing %d/%d" % (agree, len(labels)))
        print("bowline_score %.2f" % result["score"]["score"])


if __name__ == "__main__":
    main()
