"""Find and import ``components/`` and ``pipelines/`` of the checkout.

They are not part of the installed package (the design card puts them at the root of the
repository, beside the Dockerfile), so the CLI imports them by file path. The root is
``$SEMIDISENT_ROOT``, else the first parent of the current directory that has both folders,
else the checkout this package was installed from (editable installs).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from ..errors import SemidisentError

ROOT_ENV = "SEMIDISENT_ROOT"
COMPONENTS_FILE = "components/semidisent_components.py"
PIPELINE_FILE = "pipelines/semidisent_pipeline.py"
# Unique module names: "components" / "pipelines" are too generic to put on sys.path.
COMPONENTS_MODULE = "semidisent_components"
PIPELINE_MODULE = "semidisent_pipeline"


def _is_root(path: Path) -> bool:
    return (path / COMPONENTS_FILE).is_file() and (path / PIPELINE_FILE).is_file()


def project_root() -> Path:
    env = os.environ.get(ROOT_ENV)
    if env:
        if not _is_root(Path(env)):
            raise SemidisentError(
                f"${ROOT_ENV} = {env}: expected a semidisent checkout with {COMPONENTS_FILE} "
                f"and {PIPELINE_FILE}"
            )
        return Path(env).resolve()
    here = Path.cwd().resolve()
    package_checkout = Path(__file__).resolve().parents[3]  # src/semidisent/kfp_pipeline/
    for candidate in [here, *here.parents, package_checkout]:
        if _is_root(candidate):
            return candidate
    raise SemidisentError(
        f"no semidisent checkout found from {here} (looked for {COMPONENTS_FILE} and "
        f"{PIPELINE_FILE}); run from the repository or set ${ROOT_ENV}"
    )


def _import(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before executing: kfp (and dataclasses) look the module up by name.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def components_module() -> ModuleType:
    return _import(COMPONENTS_MODULE, project_root() / COMPONENTS_FILE)


def pipeline_module() -> ModuleType:
    components_module()
    return _import(PIPELINE_MODULE, project_root() / PIPELINE_FILE)
