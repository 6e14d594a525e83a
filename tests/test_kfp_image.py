"""The components' image, as far as it can be reproduced without Docker: a fresh virtual
environment installed by components/Dockerfile's own commands (tests/image_env.py: same
extras, same command lines, its build-time import check included), in which

- every component's body imports (what KFP runs in each pod: the imports are read from the
  compiled pipeline, not from a list kept by hand);
- the PostgreSQL Optuna storage of the docs opens (``open_storage('postgresql+psycopg2://...')``
  against the test PostgreSQL), which the image could not do when the driver was only in the
  ``dev`` extra.

The dependency layers are cached across sessions like Docker's layer cache (keyed by the
Dockerfile's instructions before the code and pyproject.toml); the code layer runs every time.
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from image_env import image_env
    from semidisent.tracking.environment import git_state

    commit = git_state(ROOT).get("git_commit", "")
    t0 = time.perf_counter()
    with image_env(tmp_path_factory.mktemp("image"), {"GIT_COMMIT": commit}) as env:
        env.timings["total"] = time.perf_counter() - t0
        print(f"image-equivalent environment: {env.timings}")
        yield env


def component_imports(package: Path) -> dict[str, list[str]]:
    """executor -> the import statements of its component's body (from the compiled IR)."""
    spec = next(yaml.safe_load_all(package.read_text()))
    out: dict[str, list[str]] = {}
    for label, executor in spec["deploymentSpec"]["executors"].items():
        # A lightweight component's command embeds its function's source (the pod writes it
        # to ephemeral_component.py and runs it with kfp's executor).
        (program,) = [a for a in executor["container"]["command"] if "\ndef " in f"\n{a}"]
        fn = next(n for n in ast.parse(program).body if isinstance(n, ast.FunctionDef))
        nodes = [n for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)]
        out[label] = [ast.unparse(n) for n in nodes]
    return out


def test_the_dockerfile_builds_and_checks_its_imports(image):
    # The build's last RUN imported every driver and component module, then `pip check`.
    text = "\n".join(image.log)
    assert "python -m semidisent.kfp_pipeline.image" in text
    assert "psycopg2" in text and "boto3" in text
    assert "No broken requirements found" in text
    assert image.env["SEMIDISENT_GIT_COMMIT"]  # the commit baked in (build arg -> ENV)


def test_every_component_body_imports_in_the_image(image, tmp_path):
    package = tmp_path / "pipeline.yaml"
    run_cli(
        "pipeline", "compile", "--image", "registry.example/semidisent:test",
        "--out", str(package), cwd=ROOT, check=True,
    )  # fmt: skip
    imports = component_imports(package)
    assert set(imports) >= {"exec-prepare", "exec-train", "exec-search-worker", "exec-report"}
    assert all(imports.values())
    script = "\n".join(sorted({line for lines in imports.values() for line in lines}))
    image.run("-c", script + "\nprint('ok')")


def test_the_image_opens_the_postgresql_study_storage(image, postgres_public):
    from services import create_database

    url = create_database(postgres_public, "optuna_image")
    out = image.run(
        "-c",
        "import sys\n"
        "from semidisent.config.schema import SearchParams\n"
        "from semidisent.search.study import open_storage\n"
        "storage = open_storage(SearchParams(storage=sys.argv[1]))\n"
        "print(type(storage).__name__, storage.engine.dialect.driver,"
        " len(storage.get_all_studies()))\n",
        url,
    )
    assert out.split() == ["RDBStorage", "psycopg2", "0"]
    # ... and, in a pod, the first step's check accepts it (and refuses the defaults)
    script = (
        "import json\n"
        "from semidisent.config import load_params\n"
        "from semidisent.kfp_pipeline.cluster import pod_problems\n"
        "print(json.dumps(pod_problems(load_params(None))[0]))\n"
    )
    pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}
    configured = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "SEMIDISENT_SEARCH_STORAGE": url}
    assert json.loads(image.run("-c", script, env={**pod, **configured})) == []
    refused = json.loads(image.run("-c", script, env=pod))
    assert len(refused) == 2 and "search.storage" in refused[1]
