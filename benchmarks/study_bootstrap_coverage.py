"""How often does a study's "95%" bootstrap interval cover the truth at the study's sample sizes,
and how often would equal arms get a verdict? (docs/results.md "What the verdicts mean").

For each n: ``sims`` samples of n normal paired differences with a true mean of 0; the coverage
of the plain percentile bootstrap CI of the mean and of the expanded one the tables use
(semidisent.study.statistics.bootstrap_ci), and how often the verdict rule (expanded interval +
at least min_pairs pairs) calls equal arms "better" or "worse" (1 - coverage of the rule).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/study_bootstrap_coverage.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from semidisent.study import statistics as st


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2, 3, 5, 6, 8, 10, 15, 20, 40])
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args()
    print(f"bootstrap CI of the mean, {args.confidence:.0%}, {args.resamples} resamples, "
          f"{args.sims} samples per n; min_pairs = {st.min_pairs(args.confidence)}")  # fmt: skip
    print("| n | percentile: coverage | expanded: level used | expanded: coverage | "
          "verdict when the arms are equal |")  # fmt: skip
    print("|---|---|---|---|---|")
    t0 = time.perf_counter()
    for n in args.n:
        rng = np.random.default_rng(n)
        plain = expanded = verdicts = 0
        for i in range(args.sims):
            x = rng.normal(0.0, 1.0, n)
            kw = {"confidence": args.confidence, "resamples": args.resamples, "seed": i}
            p = st.bootstrap_ci(x, expand=False, **kw)
            e = st.bootstrap_ci(x, **kw)
            assert p is not None and e is not None
            plain += p[0] <= 0.0 <= p[1]
            expanded += e[0] <= 0.0 <= e[1]
            verdicts += st.verdict(e, n, args.confidence) != "inconclusive"
        s, level = args.sims, st.expanded_confidence(args.confidence, n)
        print(f"| {n} | {plain / s:.3f} | {level:.4f} | {expanded / s:.3f} | {verdicts / s:.3f} |")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
