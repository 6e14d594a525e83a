"""``python -m semidisent.study.worker --out DIR``: a study's worker process (``semidisent study
run --jobs N`` starts N of them, side by side). It rebuilds the plan from ``DIR/study.json`` (so
it trains exactly what the orchestrator planned), then reads unit ids from stdin, one per line,
runs each, and answers one line per unit on stdout: ``done <unit>`` or ``failed <unit> <why>``.
Kept running between units: starting Python, torch and the metrics costs seconds per process.
Log lines go to stderr (the orchestrator keeps them in ``units/worker-<k>.log``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from ..errors import SemidisentError


def _answer(line: str) -> None:
    sys.stdout.write(line.replace("\n", " ") + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semidisent.study.worker")
    parser.add_argument("--out", required=True, help="the study's output folder")
    parser.add_argument("--unit", default=None, help="run this unit and exit (no stdin)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        import torch

        torch.set_num_threads(int(threads))
    from .runner import load_study_file, run_unit

    out = Path(args.out)
    study = load_study_file(out)
    units = [args.unit] if args.unit else (line.strip() for line in sys.stdin)
    for unit in units:
        if not unit:
            continue
        try:
            run_unit(study, out, unit, progress=False)
        except SemidisentError as e:  # the unit's own problem: report it, take the next one
            _answer(f"failed {unit} {e}")
            continue
        except BaseException as e:  # anything else: report it and stop this process
            traceback.print_exc()
            _answer(f"failed {unit} {type(e).__name__}: {e}")
            return 1
        _answer(f"done {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
