"""Shared pieces of the benchmarks that run experiments through the real CLI, model by model
(psvae_classification, localvae_probes, drmm_classification) and report paired differences
(those and rmm_hard_em)."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "semidisent"


def run(args: list[str], log: Path) -> None:
    """``semidisent <args>`` with one thread (two models train side by side), output to log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("a") as f:
        subprocess.run([str(BIN), *args], check=True, stdout=f, stderr=subprocess.STDOUT, env=env)


def t_interval(values: list[float]) -> dict:
    """Mean, sd and the 95% t interval of paired differences."""
    from scipy.stats import t

    n = len(values)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if n > 1 else float("nan")
    half = t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "values": values}
