"""Make the packages named in $SEMIDISENT_BLOCK_IMPORTS (comma separated) unimportable.

Put this folder on PYTHONPATH to run the project as on a machine without them (the lent GPU
machine has PyTorch but no mlflow, kfp or dvc): ``import mlflow`` then raises
ModuleNotFoundError, as it would there. Used by ``benchmarks/gpu_check.py --block-imports`` and
by the tests.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

_BLOCKED = {n.strip() for n in os.environ.get("SEMIDISENT_BLOCK_IMPORTS", "").split(",") if n}


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)
        return None


if _BLOCKED:
    sys.meta_path.insert(0, _Blocker())
