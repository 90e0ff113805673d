"""Writes an example CSV for `forewarn detect` to standard output: three days of a request
latency (seconds) every 5 minutes, with a daily rhythm, some noise, and an incident on the
third day (latency doubles for an hour from 14:00).

    python3 docs/examples/latency_csv.py > latency.csv
"""

import math
import random

rng = random.Random(15)
start = 1767225600  # 2026-01-01T00:00:00Z
print("timestamp,value")
for i in range(3 * 288):
    t = start + 300 * i
    hour = (i % 288) / 12
    value = 0.120 + 0.040 * math.sin(2 * math.pi * (hour - 9) / 24) + rng.gauss(0, 0.004)
    if 2 * 288 + 14 * 12 <= i < 2 * 288 + 15 * 12:
        value *= 2
    print(f"{t},{value:.4f}")
