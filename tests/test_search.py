"""Tiny real studies: batched trials, honest objective, pruning, nested MLflow runs, the best model
registered, two workers sharing a PostgreSQL study, and resume after a worker is killed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, ROOT, write_small_dsprites_npz
from semidisent.config import load_params

# 40 steps per trial at batch 8 + 8 on the 192-image grid; objective evaluated at 10/20/30/40.
TINY = (
    "train.batch_size=8",
    "train.log_every=10",
    "train.checkpoint_every=20",
    "search.steps=40",
    "search.reports=4",
    "search.trials_per_batch=3",
    "search.n_trials=6",
    "search.n_startup_trials=2",
    "search.gt_metrics=[mig]",
    "search.heartbeat_s=2",
    "eval.sample_scale=0.01",
    "eval.plots=false",
)
ENV = {"OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


@pytest.fixture(scope="module")
def search_prepared(tmp_path_factory) -> tuple[Path, list[str]]:
    """The small dSprites grid with a 100-label pool, 20 of them held out for selection."""
    from semidisent.stages.prepare import run_prepare

    root = tmp_path_factory.mktemp("search_prepared")
    npz = root / "dsprites_small.npz"
    write_small_dsprites_npz(npz)
    overrides = [
        f"data.path={npz}",
        "supervision.n_labels=100",
        "supervision.validation_fraction=0.2",
    ]
    run_prepare(load_params(None, overrides), root / "prepared", progress=False)
    return root / "prepared", overrides


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2-core box is shared: no OpenMP barrier stalls
    yield
    torch.set_num_threads(before)


def _trials(storage: str, name: str) -> list:
    import optuna

    return optuna.load_study(study_name=name, storage=storage).get_trials()


@pytest.mark.integration
def test_tiny_study_on_sqlite_with_nested_mlflow_runs(
    search_prepared, mlflow_server, tmp_path, one_thread
):
    from mlflow import MlflowClient

    from semidisent.metrics.few_label import compute_few_label
    from semidisent.metrics.representation import vae_representation
    from semidisent.models.io import load_model
    from semidisent.stages.search import run_search

    prepared, data_overrides = search_prepared
    storage = f"sqlite:///{tmp_path}/optuna.db"
    params = load_params(
        ROOT / "params.yaml",
        [
            *data_overrides,
            *TINY,
            "eval.plots=true",
            f"search.storage={storage}",
            f"tracking.uri={mlflow_server}",
            "tracking.experiment=search-test",
            "tracking.registered_model=search-test-vae",
        ],
    )
    out = tmp_path / "search"
    result = run_search(params, prepared, out, progress=False)

    # -- the study: 6 trials in 2 batches of 3, some pruned, the rest complete
    c = result.counts
    assert c["complete"] + c["pruned"] == 6 and c["failed"] == 0
    assert c["pruned"] >= 1, "the median pruner never stopped a trial"
    assert c["complete"] >= 3  # the first batch cannot be pruned (nothing completed before it)
    assert sorted(result.trials_run) == list(range(6))
    trials = _trials(storage, result.study)
    assert [t.number for t in trials] == list(range(6))
    for t in trials:
        # ask-and-tell: each batch of 3 trials was trained as ONE batched model
        assert t.user_attrs["batched_models"] == 3
        if t.state.name == "COMPLETE":
            assert sorted(t.intermediate_values) == [10, 20, 30]
            assert set(t.user_attrs["gt"]) == {"mig"}
            # The random-encoder baseline is the same for every trial: never scored per trial.
            scored = json.loads((out / "trials" / f"{t.number:05d}" / "metrics.json").read_text())
            assert "mig" in scored["summary"] and "random_encoder" not in scored
        else:
            assert max(t.intermediate_values) < 40 and t.user_attrs["steps"] < 40

    # -- outputs
    best = json.loads((out / "best_params.json").read_text())
    assert best["study"] == result.study and best["trial"] == result.best_trial
    assert set(best["train"]) == {"beta", "replacement_rate", "gamma_sup"}
    assert best["values"] == trials[best["trial"]].values
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(6))
    for r, t in zip(rows, trials, strict=True):
        assert r["state"] == t.state.name and float(r["beta"]) == t.params["beta"]
        assert (r["gt_mig"] != "") == (t.state.name == "COMPLETE")
    summary = json.loads((out / "search_summary.json").read_text())
    assert (
        summary["trials"]["complete"] == c["complete"] and summary["best"]["trial"] == best["trial"]
    )
    assert summary["selection"]["gt_metric"] == "mig" and summary["selection"]["n"] == c["complete"]
    assert (out / "trials.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "best_model.pt").exists()

    # -- honest objective: the told value is val_mig of the saved model on the labelled pool
    from semidisent.artifacts.prepared import load_prepared

    prep = load_prepared(prepared, params)
    model, meta = load_model(out / "trials" / f"{best['trial']:05d}" / "model.pt")
    assert meta["train"]["steps"] == 40 and meta["train"]["beta"] == best["train"]["beta"]
    scores = compute_few_label(prep.dataset, prep.mask, vae_representation(model, "cpu"), 0)
    assert scores["val_mig"]["discrete_mig"] == pytest.approx(best["values"][0], abs=1e-6)
    assert scores["val_mig"]["num_labels"] == 100  # dlib's protocol: the whole 100-label pool

    # -- MLflow: one parent run, one nested child per trial with params, curves, metrics, pictures
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("search-test")
    parent = client.get_run(result.parent_run_id)
    assert parent.info.run_name == f"search-{result.study}"
    assert parent.data.metrics["best.trial"] == best["trial"]
    children = client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    assert len(children) == 6
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in children}
    assert sorted(by_trial) == list(range(6))
    for t in trials:
        run = by_trial[t.number]
        assert run.info.status == "FINISHED"
        assert run.data.tags["optuna.state"] == t.state.name
        assert run.data.tags["batched_models"] == "3"
        assert float(run.data.params["train.beta"]) == t.params["beta"]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        curve = client.get_metric_history(run.info.run_id, "train/loss")
        assert min(m.step for m in curve) == 10
        if t.state.name == "COMPLETE":
            assert "summary.mig" in run.data.metrics  # the full ground truth, beside
            arts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"plots", "model"} <= arts
    # -- the best trial's model is registered, once
    versions = client.search_model_versions("name='search-test-vae'")
    assert len(versions) == 1 and versions[0].tags["trial"] == str(best["trial"])
    assert versions[0].run_id == by_trial[best["trial"]].info.run_id

    # -- a rerun of a finished study trains nothing and registers nothing new
    again = run_search(params, prepared, out, progress=False)
    assert again.trials_run == [] and again.counts == result.counts
    assert len(client.search_model_versions("name='search-test-vae'")) == 1


@pytest.mark.integration
def test_hyperband_prunes_inside_batches(search_prepared, tmp_path, one_thread, monkeypatch):
    """Hyperband compares trials of a bracket at each rung, running ones included, so it prunes
    from the first batch on (the median pruner waits for complete trials). Each batch is built
    once (data uploaded, step compiled / captured) and advanced from rung to rung."""
    from semidisent.stages.search import run_search
    from semidisent.training import trainer

    builds = []
    real_build = trainer.build_run

    def counting_build(prepared, configs, model_params):
        builds.append(len(configs))
        return real_build(prepared, configs, model_params)

    monkeypatch.setattr(trainer, "build_run", counting_build)

    prepared, data_overrides = search_prepared
    storage = f"sqlite:///{tmp_path}/optuna.db"
    params = load_params(
        ROOT / "params.yaml",
        [
            *data_overrides,
            *TINY,
            "search.pruner=hyperband",
            "search.baseline_trials=0",  # p = 0 baseline trials are never pruned
            # one report before the end: one bracket, one rung (step 20), two trainer calls
            "search.reports=2",
            "search.gt_metrics=[]",
            # a fixed name: Hyperband's bracket of a trial is a hash of study name and number
            "search.study_name=hyperband-test",
            f"search.storage={storage}",
            "tracking.enabled=false",
        ],
    )
    result = run_search(params, prepared, tmp_path / "search", progress=False)
    c = result.counts
    assert c["complete"] + c["pruned"] == 6 and c["failed"] == 0
    assert c["pruned"] >= 1, "the Hyperband pruner never stopped a trial"
    assert builds == [3, 3]  # two batches of three, two rungs each: one build per batch
    assert result.rung_memory and all(m is None for m in result.rung_memory)  # CPU: no CUDA
    for t in _trials(storage, result.study):
        if t.state.name == "PRUNED":
            assert t.user_attrs["steps"] == 20 and list(t.intermediate_values) == [20]


@pytest.mark.integration
def test_multi_objective_study(search_prepared, tmp_path, one_thread):
    """Disentanglement (few-label) and reconstruction: both told, the Pareto front summarised."""
    from semidisent.stages.search import run_search

    prepared, data_overrides = search_prepared
    storage = f"sqlite:///{tmp_path}/optuna.db"
    params = load_params(
        ROOT / "params.yaml",
        [
            *data_overrides,
            *TINY,
            "search.objectives=[val_mig,recon]",
            "search.directions=[maximize,minimize]",
            "search.pruner=none",
            "search.n_trials=3",
            f"search.storage={storage}",
            "tracking.enabled=false",
        ],
    )
    out = tmp_path / "search"
    result = run_search(params, prepared, out, progress=False)
    assert result.counts["complete"] == 3 and result.objectives == ["val_mig", "recon"]
    trials = _trials(storage, result.study)
    assert all(len(t.values) == 2 and not t.intermediate_values for t in trials)
    summary = json.loads((out / "search_summary.json").read_text())
    front = summary["pareto_trials"]
    assert front and set(front) <= {0, 1, 2} and summary["best"]["trial"] in front
    best = json.loads((out / "best_params.json").read_text())
    assert best["values"] == trials[best["trial"]].values
    assert best["directions"] == ["maximize", "minimize"]
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert {"val_mig", "recon", "gt_mig"} <= set(rows[0])


@pytest.mark.integration
def test_every_search_runs_the_p0_baseline_and_reports_it(
    search_prepared, tmp_path, one_thread, capsys
):
    """The study's first trial is the p = 0 baseline (Locatello et al. alone); the summary, the
    CLI line and the picture report the best p = 0 trial beside the best; a resumed study with a
    larger budget does not schedule the baseline again."""
    from semidisent import cli
    from semidisent.search.study import study_name

    prepared, data_overrides = search_prepared
    storage = f"sqlite:///{tmp_path}/optuna.db"
    over = [*data_overrides, *TINY, "search.steps=10", "search.reports=1", "search.n_trials=2"]
    over += ["search.baseline_trials=1", "search.trials_per_batch=2", "search.pruner=none"]
    over += [f"search.storage={storage}", "tracking.enabled=false"]
    out = tmp_path / "search"

    def search(*extra: str) -> str:
        argv = ["search", "--params", str(ROOT / "params.yaml")]
        argv += [x for o in [*over, *extra] for x in ("-S", o)]
        assert cli.main([*argv, "--prepared", str(prepared), "--out", str(out), "-q"]) == 0
        return capsys.readouterr().out

    printed = search()
    name = study_name(load_params(ROOT / "params.yaml", over))
    trials = _trials(storage, name)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[0].params["replacement_rate"] == 0.0 and trials[0].user_attrs["baseline"]
    summary = json.loads((out / "search_summary.json").read_text())
    base = summary["baseline"]
    zero = [t for t in trials if t.params["replacement_rate"] == 0.0]
    best_zero = max(zero, key=lambda t: (t.values[0], -t.number))
    assert base["trial"] == best_zero.number and base["val_mig"] == best_zero.values[0]
    assert base["gt"]["mig"] == best_zero.user_attrs["gt"]["mig"]  # logged, never selected on
    assert base["best_minus_baseline"]["val_mig"] == pytest.approx(
        summary["best"]["val_mig"] - base["val_mig"]
    )
    assert f"best trial {summary['best']['trial']}: val_mig" in printed
    assert f"best p = 0 (baseline) trial {best_zero.number}: val_mig" in printed
    assert (out / "trials.png").read_bytes()[:4] == b"\x89PNG"

    search("search.n_trials=3", "search.gt_metrics=[]")  # resumed: one new, sampled trial
    trials = _trials(storage, name)
    assert len(trials) == 3 and sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1


@pytest.mark.integration
def test_searched_model_families_train_in_separate_groups(
    search_prepared, tmp_path, one_thread, monkeypatch
):
    """model.name searched over s2vae and s2_factor_vae with FactorVAE's gamma: one batch of
    four trials (the grid: 2 families x 2 gammas) trains each family as its own batched model,
    every trial's model carries its family and keys, and best_params.json carries the best
    trial's, ready to train it again."""
    from semidisent.models.io import load_model
    from semidisent.stages.search import run_search
    from semidisent.training import trainer

    builds = []
    real_build = trainer.build_run

    def counting_build(prepared, configs, model_params):
        builds.append((model_params.name, len(configs)))
        return real_build(prepared, configs, model_params)

    monkeypatch.setattr(trainer, "build_run", counting_build)
    prepared, data_overrides = search_prepared
    storage = f"sqlite:///{tmp_path}/optuna.db"
    space = (
        "search.space={model.name: {choices: [s2vae, s2_factor_vae]}, "
        "s2_factor_vae.gamma: {low: 5, high: 50, step: 45}}"
    )
    over = [*data_overrides, *TINY, space, "search.sampler=grid", "search.n_trials=4"]
    over += ["search.trials_per_batch=4", "search.steps=10", "search.reports=1"]
    over += ["search.pruner=none", "s2_factor_vae.discriminator_units=32"]
    over += [f"search.storage={storage}", "tracking.enabled=false"]
    params = load_params(ROOT / "params.yaml", over)
    out = tmp_path / "search"
    result = run_search(params, prepared, out, progress=False)

    assert result.counts["complete"] == 4
    trials = _trials(storage, result.study)
    families = sorted(t.params["model.name"] for t in trials)
    assert families == ["s2_factor_vae", "s2_factor_vae", "s2vae", "s2vae"]
    # one batch, one batched model per family (s2vae trials never share FactorVAE's)
    assert sorted(builds) == [("s2_factor_vae", 2), ("s2vae", 2)]
    assert all(t.user_attrs["batched_models"] == 2 for t in trials)
    for t in trials:
        _, meta = load_model(out / "trials" / f"{t.number:05d}" / "model.pt")
        assert meta["model"]["name"] == t.params["model.name"]
        if t.params["model.name"] == "s2_factor_vae":
            assert meta["s2_factor_vae"]["gamma"] == t.params["s2_factor_vae.gamma"]
            assert meta["s2_factor_vae"]["discriminator_units"] == 32
        else:
            assert "s2_factor_vae" not in meta  # its gamma was drawn, and applies to no s2vae

    best = json.loads((out / "best_params.json").read_text())
    winner = trials[best["trial"]]
    assert best["model"] == {"name": winner.params["model.name"]}
    assert result.best_params == best
    if winner.params["model.name"] == "s2_factor_vae":
        assert best["s2_factor_vae"] == {"gamma": winner.params["s2_factor_vae.gamma"]}
    else:
        assert "s2_factor_vae" not in best
    # the overrides give back the trial's configuration (its family's section included)
    again = load_params(ROOT / "params.yaml", [*over, *best["overrides"]])
    _, meta = load_model(out / "trials" / f"{best['trial']:05d}" / "model.pt")
    assert again.section("model") == meta["model"]
    own = again.method_params()
    assert (None if own is None else again.section(again.model.name)) == meta.get("s2_factor_vae")
    summary = json.loads((out / "search_summary.json").read_text())
    assert summary["best"]["model"] == winner.params["model.name"]
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert sorted(r["model.name"] for r in rows) == families


def _cli(
    prepared: Path,
    overrides: list[str],
    out: Path,
    *extra: str,
    log: Path | None = None,
    quiet: bool = True,
) -> subprocess.Popen:
    cmd = [str(BIN / "semidisent"), "search", "--params", str(ROOT / "params.yaml")]
    for o in overrides:
        cmd += ["-S", o]
    cmd += ["--prepared", str(prepared), "--out", str(out), *(["-q"] if quiet else []), *extra]
    sink = log.open("w") if log else subprocess.DEVNULL
    return subprocess.Popen(
        cmd,
        stdout=sink,
        stderr=subprocess.STDOUT,
        env={**os.environ, **ENV},
        cwd=out.parent,
        start_new_session=True,
    )


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert rc == 0, log.read_text()[-3000:]


@pytest.mark.integration
def test_two_workers_share_a_postgresql_study(search_prepared, postgres_public, tmp_path):
    from semidisent.search.study import study_name
    from semidisent.stages.search import summarize_study
    from services import create_database

    prepared, data_overrides = search_prepared
    url = create_database(postgres_public, "search_two_workers")
    overrides = [*data_overrides, *TINY, f"search.storage={url}", "tracking.enabled=false"]
    overrides += ["search.trials_per_batch=2", "search.pruner=hyperband"]
    # The pipeline's first step: create the study (and its parent run) before the workers start.
    first = _cli(prepared, overrides, tmp_path / "init", "--n-trials", "0", log=tmp_path / "i.log")
    _wait(first, tmp_path / "i.log")
    procs = []
    for w in ("w0", "w1"):
        log = tmp_path / f"{w}.log"
        extra = ("--worker-id", w, "--n-trials", "3")
        procs.append((_cli(prepared, overrides, tmp_path / f"out_{w}", *extra, log=log), log))
    for proc, log in procs:
        _wait(proc, log)

    params = load_params(ROOT / "params.yaml", overrides)
    trials = _trials(url, study_name(params))
    assert [t.number for t in trials] == list(range(6)), "duplicated or missing trial numbers"
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    workers = [t.user_attrs["worker"] for t in trials]
    assert workers.count("w0") == 3 and workers.count("w1") == 3
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6  # no trial asked twice
    # each worker summarised the shared study; a last step can do it from the storage alone
    summary = summarize_study(params, tmp_path / "final")
    assert summary.counts["finished"] == 6
    rows = list(csv.DictReader((tmp_path / "final" / "trials.csv").open()))
    assert {r["worker"] for r in rows} == {"w0", "w1"}
    # a worker restarted with the same id and budget has nothing left to do
    again = _cli(prepared, overrides, tmp_path / "out_w0", "--worker-id", "w0", "--n-trials", "3",
                 log=tmp_path / "again.log")  # fmt: skip
    _wait(again, tmp_path / "again.log")
    assert len(_trials(url, study_name(params))) == 6


def _mid_batch(db: Path) -> bool:
    import sqlite3

    if not db.exists():
        return False
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            complete = con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'")
            reported = con.execute(
                "SELECT count(*) FROM trials t JOIN trial_intermediate_values v "
                "ON v.trial_id = t.trial_id WHERE t.state = 'RUNNING'"
            )
            return complete.fetchone()[0] > 0 and reported.fetchone()[0] > 0
        finally:
            con.close()
    except sqlite3.Error:  # tables not created yet, or locked for a moment
        return False


@pytest.mark.integration
def test_resume_after_killing_a_worker_loses_no_finished_trial(search_prepared, tmp_path):
    import optuna

    from semidisent.search.study import study_name

    prepared, data_overrides = search_prepared
    storage = f"sqlite:///{tmp_path}/optuna.db"
    overrides = [*data_overrides, *TINY, f"search.storage={storage}", "tracking.enabled=false"]
    overrides += ["search.trials_per_batch=2", "search.steps=60", "search.reports=3"]
    name = study_name(load_params(ROOT / "params.yaml", overrides))
    out = tmp_path / "search"
    log = tmp_path / "first.log"
    proc = _cli(prepared, overrides, out, log=log)
    deadline = time.time() + 240
    killed_running: list[int] = []
    complete_before: dict[int, list[float]] = {}
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.3)
        # Mid-batch: a trial is complete and a running one has reported the objective at step
        # 20 (of 60), so its batch checkpoint exists. Read-only: the worker owns the database.
        if _mid_batch(tmp_path / "optuna.db"):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            trials = optuna.load_study(study_name=name, storage=storage).get_trials()
            killed_running = [t.number for t in trials if t.state.name == "RUNNING"]
            complete_before = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}
            break
    assert killed_running, f"the worker was not caught mid-batch:\n{log.read_text()[-2000:]}"

    second = _cli(prepared, overrides, out, log=tmp_path / "second.log", quiet=False)
    _wait(second, tmp_path / "second.log")
    if len(killed_running) == 2:  # the whole batch comes back: it resumes its checkpoint
        assert "resuming trials" in (tmp_path / "second.log").read_text()
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    by_number = {t.number: t for t in trials}
    assert [t.number for t in trials] == list(range(len(trials)))
    # nothing finished before the kill was lost or run again
    for n, values in complete_before.items():
        assert by_number[n].state.name == "COMPLETE" and by_number[n].values == values
    # the interrupted trials failed and were re-queued with the same parameters, then finished
    for n in killed_running:
        assert by_number[n].state.name == "FAIL" and not by_number[n].user_attrs.get("failure")
        copies = [t for t in trials if t.system_attrs.get("failed_trial") == n]
        assert len(copies) == 1 and copies[0].params == by_number[n].params
        assert copies[0].state.name in ("COMPLETE", "PRUNED")
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 6  # the study's budget, exactly
    summary = json.loads((out / "search_summary.json").read_text())
    assert summary["trials"]["finished"] == 6
    assert summary["trials"]["interrupted"] == len(killed_running)
    assert not (out / "checkpoints").exists()  # batch checkpoints are removed when told
