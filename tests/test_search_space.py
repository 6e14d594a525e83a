"""Search parameters, storage, sampler/pruner setup and the results writers (no training)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from semidisent.config import load_params
from semidisent.errors import ParamsError


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        # empty ranges
        ("search.space.beta={low: 4, high: 4}", "search.space.beta.high = 4", "range is empty"),
        ("search.space.beta={low: 8, high: 2}", "search.space.beta.high = 2", "range is empty"),
        # unknown parameter names
        ("search.space.betta={low: 1, high: 2}", "search.space.betta", "a key of train"),
        # beta <= 0, checked with train.beta's own rule
        ("search.space.beta={low: 0, high: 4}", "search.space.beta.low = 0", "> 0 (as train.beta)"),
        ("search.space.beta={low: -1, high: 4}", "search.space.beta.low = -1", "> 0"),
        ("search.space.beta={choices: [0, 4]}", "search.space.beta.choices = 0", "> 0"),
        # other bad spaces
        ("search.space.replacement_rate={low: 0, high: 1.5}", "replacement_rate.high", "[0, 1]"),
        ("search.space.gamma_sup={low: 0, high: 1, log: true}", "gamma_sup.low", "log-uniform"),
        ("search.space.supervised_loss={choices: [xent, hinge]}", "supervised_loss", "xent, l2"),
        ("search.space.supervised_loss={low: 1, high: 2}", "supervised_loss", "choices"),
        ("search.space.steps={low: 10, high: 20}", "search.space.steps", "search.steps"),
        ("search.space.beta={low: 1, high: 2, step: 5}", "search.space.beta.step", "(0, 1"),
        ("search.space.beta=4", "search.space.beta", "a mapping"),
        ("search.space={}", "search.space", "at least one"),
        ("search.sampler=grid", "search.space.beta", "grid sampler needs finite values"),
        # objectives
        ("search.objectives=[mig]", "search.objectives", "uses the full ground truth"),
        ("search.objectives=[val_foo]", "search.objectives", "val_mig, val_dci"),
        ("search.objectives=[val_mig,recon]", "search.directions", "one direction per objective"),
        ("search.gt_metrics=[accuracy]", "search.gt_metrics", "metric names among"),
        ("search.reports=5000", "search.reports = 5000", "at most steps"),
        ("search.study_name=''", "search.study_name", "non-empty"),
        # the p = 0 baseline must be a value of a searched replacement rate
        ("search.space.replacement_rate={low: 0.25, high: 1}", "replacement_rate", "low: 0"),
        ("search.space.replacement_rate={choices: [0.5, 1]}", "baseline_trials = 2", "with 0"),
        ("search.baseline_trials=-1", "search.baseline_trials = -1", ">= 0"),
    ],
)
def test_bad_search_parameters_are_refused_at_load(override, key, allowed):
    with pytest.raises(ParamsError) as e:
        load_params(ROOT / "params.yaml", [override])
    assert key in str(e.value)
    assert allowed in str(e.value)


def test_multi_objective_needs_pruner_none():
    over = ["search.objectives=[val_mig,recon]", "search.directions=[maximize,minimize]"]
    with pytest.raises(ParamsError, match=r"search\.pruner = 'median'.*none with several"):
        load_params(ROOT / "params.yaml", over)
    params = load_params(ROOT / "params.yaml", [*over, "search.pruner=none"])
    assert params.search.objectives == ("val_mig", "recon")


def test_bad_space_refused_by_the_cli_before_any_trial(tmp_path):
    """One error line naming key, value and rule; no storage created, nothing trained."""
    proc = run_cli(
        "search",
        "--params",
        str(ROOT / "params.yaml"),
        "-S",
        "search.space.beta={low: 0, high: 16}",
        "-S",
        f"search.storage=sqlite:///{tmp_path}/optuna.db",
        "--prepared",
        str(tmp_path / "missing"),
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "search.space.beta.low = 0" in proc.stderr and "> 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "out").exists()


def test_storage_urls(tmp_path, monkeypatch):
    from semidisent.search.study import resolve_storage_url

    monkeypatch.chdir(tmp_path)
    assert resolve_storage_url("sqlite:///optuna.db") == f"sqlite:///{tmp_path}/optuna.db"
    assert (
        resolve_storage_url("sqlite:///a/b.db?timeout=5")
        == f"sqlite:///{tmp_path}/a/b.db?timeout=5"
    )
    assert resolve_storage_url("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert resolve_storage_url("sqlite:///:memory:") == "sqlite:///:memory:"
    pg = "postgresql+psycopg2://u:pw@db:5432/optuna"
    assert resolve_storage_url(pg) == pg


def test_unreachable_storage_error_never_shows_the_password():
    from semidisent.search.study import SearchError, open_storage

    params = load_params(
        ROOT / "params.yaml",
        ["search.storage=postgresql+psycopg2://alice:hunter22@127.0.0.1:9/optuna"],
    )
    with pytest.raises(SearchError) as e:
        open_storage(params.search)
    assert "hunter22" not in str(e.value)
    assert "postgresql+psycopg2://***@127.0.0.1:9/optuna" in str(e.value)


def test_space_to_distributions_and_trial_params():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from semidisent.search.objective import trial_train_params
    from semidisent.search.space import parse_space
    from semidisent.search.study import distributions, grid_size

    space = {
        "beta": {"low": 1, "high": 16, "log": True},
        "seed": {"low": 0, "high": 4},
        "supervised_loss": {"choices": ["xent", "l2"]},
        "replacement_rate": {"low": 0, "high": 1, "step": 0.25},
    }
    d = distributions(parse_space(space))
    assert d["beta"] == FloatDistribution(1.0, 16.0, log=True)
    assert d["seed"] == IntDistribution(0, 4)
    assert d["supervised_loss"] == CategoricalDistribution(["xent", "l2"])
    assert d["replacement_rate"] == FloatDistribution(0.0, 1.0, step=0.25)
    grid = {k: v for k, v in space.items() if k != "beta"}
    assert grid_size(parse_space(grid, "grid")) == 5 * 2 * 5

    params = load_params(ROOT / "params.yaml", ["search.steps=77"])
    tp = trial_train_params(params, {"beta": 2.5, "replacement_rate": 0.25})
    # the contract: replace(params.train, steps=params.search.steps, **suggested)
    assert tp == dataclasses.replace(params.train, steps=77, beta=2.5, replacement_rate=0.25)
    with pytest.raises(ParamsError, match="replacement_target"):
        trial_train_params(params, {"replacement_target": "scaled"})  # needs l2


def test_rungs_and_seeds():
    from semidisent.search.study import rung_steps, worker_seed

    sp = load_params(ROOT / "params.yaml", ["search.steps=1000", "search.reports=4"]).search
    assert rung_steps(sp) == [250, 500, 750, 1000]
    assert rung_steps(dataclasses.replace(sp, reports=1)) == [1000]
    multi = dataclasses.replace(sp, objectives=("val_mig", "recon"))
    assert rung_steps(multi) == [1000]  # no intermediate values for multi-objective studies
    assert worker_seed(3, None, 0) == 3  # a fresh single-worker study is reproducible
    seeds = {worker_seed(3, w, n) for w in (None, "a", "b") for n in (0, 5)}
    assert len(seeds) == 6  # workers and resumed calls draw other trials


def test_grid_sampler_with_ask_and_tell_visits_each_point_once(tmp_path):
    import optuna

    from semidisent.search.space import parse_space
    from semidisent.search.study import distributions, make_sampler

    space = {"replacement_rate": {"low": 0, "high": 1, "step": 0.5}, "seed": {"choices": [0, 1]}}
    params = load_params(ROOT / "params.yaml", ["search.sampler=grid", f"search.space={space}"])
    dims = parse_space(space, "grid")
    study = optuna.create_study(sampler=make_sampler(params.search, dims, 0), direction="maximize")
    batch = [study.ask(distributions(dims)) for _ in range(6)]
    for t in batch:
        study.tell(t, 0.5)  # Optuna's GridSampler would call study.stop() here and raise
    points = {(t.params["replacement_rate"], t.params["seed"]) for t in study.trials}
    assert len(points) == 6


def _study_params(tmp_path: Path, *extra: str):
    return load_params(
        ROOT / "params.yaml",
        [f"search.storage=sqlite:///{tmp_path}/optuna.db", "search.heartbeat_s=1", *extra],
    )


def test_study_made_with_other_parameters_is_refused(tmp_path):
    from semidisent.search.study import SearchError, open_storage, open_study, study_name

    p1 = _study_params(tmp_path, "search.study_name=fixed", "search.steps=1000")
    open_study(p1, open_storage(p1.search))
    open_study(p1, open_storage(p1.search))  # same parameters: loaded
    p2 = _study_params(tmp_path, "search.study_name=fixed", "search.steps=2000")
    with pytest.raises(SearchError, match=r"search\.steps = 1000 in the study but 2000 now"):
        open_study(p2, open_storage(p2.search))
    # with {digest} in the name, another configuration is simply another study
    q1, q2 = _study_params(tmp_path), _study_params(tmp_path, "search.steps=2000")
    assert study_name(q1) != study_name(q2) and study_name(q1).startswith("semidisent-")
    assert study_name(q1) == study_name(_study_params(tmp_path, "search.n_trials=99"))
    # the baseline count schedules trials, it does not change what they are: the same study
    assert study_name(q1) == study_name(_study_params(tmp_path, "search.baseline_trials=5"))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_stale_and_orphaned_trials_are_requeued(tmp_path):
    import optuna

    from semidisent.search.study import (
        Heartbeat,
        Owner,
        counts,
        open_storage,
        open_study,
        requeue_lost_trials,
        retry_callback,
    )

    params = _study_params(tmp_path)
    storage = open_storage(params.search)
    study = open_study(params, storage)
    dist = {"beta": optuna.distributions.FloatDistribution(1, 16, log=True)}
    dead_here = Owner("w0", pid=2**22 + 12345)  # no such process on this host
    elsewhere = Owner("w1", host="another-host")
    live = Owner("w2", pid=os.getppid())  # another live process on this host
    trials = {}
    for owner in (dead_here, elsewhere, live):
        t = study.ask(dist)
        for k, v in owner.attrs().items():
            t.set_user_attr(k, v)
        trials[owner.worker] = t
    hb = Heartbeat(storage, None)  # record once, no thread: the trials then fall silent
    hb.interval = 1
    hb.add([trials["w1"]._trial_id])
    me = Owner("me")
    retry = retry_callback(params.search)
    # at once: the dead process on this host; the other host's trial still has a fresh heartbeat
    requeue_lost_trials(study, me, retry)
    state = {t.number: t.state.name for t in study.get_trials()}
    assert state[trials["w0"].number] == "FAIL" and state[trials["w1"].number] == "RUNNING"
    assert state[trials["w2"].number] == "RUNNING"  # alive (this very test process)
    time.sleep(3 * 1 + 1.5)  # the heartbeat grace period: three intervals
    requeue_lost_trials(study, me, retry)
    all_trials = study.get_trials()
    assert all_trials[trials["w1"].number].state.name == "FAIL"
    waiting = [t for t in all_trials if t.state.name == "WAITING"]
    assert sorted(t.system_attrs["failed_trial"] for t in waiting) == sorted(
        [trials["w0"].number, trials["w1"].number]
    )
    assert all(t.params == all_trials[t.system_attrs["failed_trial"]].params for t in waiting)
    c = counts(all_trials)
    # interrupted trials are not finished: their copies will be
    assert c["interrupted"] == 2 and c["finished"] == 0 and c["waiting"] == 2


# ------------------------------------------------------------------------------ results


def _frozen(number, state, values, params, gt=None, inter=None):
    import optuna

    t = optuna.trial.create_trial(
        state=getattr(optuna.trial.TrialState, state),
        values=values,
        params=params,
        distributions={
            "beta": optuna.distributions.FloatDistribution(1, 16, log=True),
            "replacement_rate": optuna.distributions.FloatDistribution(0, 1),
        },
        user_attrs={"gt": gt or {}},
        intermediate_values=inter or {},
    )
    t.number = number
    return t


def _view(objectives=("val_mig",), directions=("maximize",)):
    from semidisent.search.results import StudyView

    return StudyView(
        name="s",
        objectives=objectives,
        directions=directions,
        space=("beta", "replacement_rate"),
        log_axes=("beta",),
        fixed={"beta": 4.0, "replacement_rate": 0.5},
        gt_metrics=("mig", "dci"),
    )


def test_results_table_summary_selection_and_plot(tmp_path):
    import csv

    from semidisent.search import results

    trials = [
        _frozen(0, "COMPLETE", [0.30], {"beta": 2.0, "replacement_rate": 0.1}, {"mig": 0.20}),
        _frozen(1, "COMPLETE", [0.50], {"beta": 8.0, "replacement_rate": 0.9}, {"mig": 0.35}),
        _frozen(2, "COMPLETE", [0.40], {"beta": 4.0, "replacement_rate": 0.5}, {"mig": 0.40}),
        _frozen(3, "PRUNED", [0.05], {"beta": 1.0, "replacement_rate": 0.3}, inter={250: 0.05}),
        _frozen(4, "FAIL", None, {"beta": 16.0, "replacement_rate": 0.0}),
    ]
    view = _view()
    assert results.best_trial(trials, ("maximize",)).number == 1
    assert results.best_trial(trials, ("minimize",)).number == 0
    sel = results.selection_quality(trials, view)
    assert sel["selected_trial"] == 1 and sel["truly_best_trial"] == 2
    assert sel["regret"] == pytest.approx(0.05) and sel["spearman"] == pytest.approx(0.5)
    s = results.summary(trials, view, {"complete": 3, "pruned": 1})
    assert s["best"]["trial"] == 1 and s["best"]["val_mig"] == 0.5 and s["trials"]["total"] == 5
    best = results.best_params(trials, view, steps=1000)
    assert best["train"] == {"beta": 8.0, "replacement_rate": 0.9} and best["values"] == [0.5]
    rows = results.trial_rows(trials, view)
    results.write_csv(tmp_path / "t.csv", rows, view)
    table = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [r["number"] for r in table] == ["0", "1", "2", "3", "4"]
    assert table[3]["state"] == "PRUNED" and table[3]["steps"] == "250"
    assert table[2]["gt_mig"] == "0.4" and table[4]["val_mig"] == ""
    png = results.plot_trials(tmp_path / "t.png", trials, view)
    assert png.read_bytes()[:4] == b"\x89PNG"
    # no trial at all: still valid outputs (DVC needs them)
    assert results.best_params([], view, 10)["trial"] is None
    results.plot_trials(tmp_path / "empty.png", [], view)


def test_pareto_best_for_two_objectives():
    from semidisent.search import results

    p = {"beta": 2.0, "replacement_rate": 0.1}
    trials = [
        _frozen(0, "COMPLETE", [0.3, 100.0], p),
        _frozen(1, "COMPLETE", [0.5, 300.0], p),
        _frozen(2, "COMPLETE", [0.2, 400.0], p),  # dominated by 0
        _frozen(3, "COMPLETE", [0.1, 50.0], p),
    ]
    dirs = ("maximize", "minimize")
    assert [t.number for t in results.pareto_front(trials, dirs)] == [0, 1, 3]
    assert results.best_trial(trials, dirs).number == 1
    s = results.summary(trials, _view(("val_mig", "recon"), dirs), {})
    assert s["pareto_trials"] == [0, 1, 3]


def test_trials_per_batch_defaults_to_the_device():
    import torch

    from semidisent.search.objective import trials_per_batch

    expected = 8 if torch.cuda.is_available() else 1
    assert trials_per_batch(load_params(None, [])) == expected
    assert trials_per_batch(load_params(None, ["train.device=cpu"])) == 1
    assert trials_per_batch(load_params(None, ["search.trials_per_batch=5"])) == 5
    with pytest.raises(ParamsError, match=r"search\.trials_per_batch"):
        load_params(None, ["search.trials_per_batch=0"])


# ------------------------------------------------------------------------------ baseline (p = 0)


def test_default_space_includes_the_p0_baseline():
    from semidisent.config.schema import SearchParams
    from semidisent.search.space import parse_space

    default, yaml = SearchParams(), load_params(ROOT / "params.yaml", []).search
    assert parse_space(yaml.space) == parse_space(default.space)  # params.yaml agrees
    assert yaml.baseline_trials == default.baseline_trials >= 1
    rate = {d.name: d for d in parse_space(default.space)}["replacement_rate"]
    assert rate.grid_values()[0] == 0.0 and rate.grid_values()[-1] == 1.0


def _ask_all(params, study, n: int, seed: int) -> list:
    from semidisent.search.space import parse_space
    from semidisent.search.study import distributions, make_sampler

    dims = parse_space(params.search.space, params.search.sampler)
    study.sampler = make_sampler(params.search, dims, seed)
    trials = [study.ask(distributions(dims)) for _ in range(n)]
    for t in trials:
        study.tell(t, float(t.params["beta"]))
    return trials


GRID_SPACE = (
    "search.space={beta: {choices: [1.0, 4.0]}, replacement_rate: {low: 0, high: 1, step: 0.5}}"
)


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid"])
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_every_sampler_runs_the_baseline_first_once_per_study(tmp_path, sampler):
    """The first baseline_trials trials have p = 0 (other keys sampled), values stay in the
    stepped space, and a resumed study (another worker seed) gets no further baseline."""
    from semidisent.search.study import open_storage, open_study
    from semidisent.stages.search import init_study

    extra = [f"search.sampler={sampler}", "tracking.enabled=false"]
    extra += [GRID_SPACE] if sampler == "grid" else []
    params = _study_params(tmp_path, *extra)
    init_study(params)
    study = open_study(params, open_storage(params.search))
    first = _ask_all(params, study, 3, seed=0)
    assert [t.params["replacement_rate"] for t in first[:2]] == [0.0, 0.0]
    assert len({t.params["beta"] for t in first[:2]}) == 2  # the other keys are sampled
    init_study(params)  # resumed (or another worker joining): nothing more is scheduled
    study = open_study(params, open_storage(params.search))
    _ask_all(params, study, 3, seed=12345)
    trials = study.get_trials()
    rates = [t.params["replacement_rate"] for t in trials]
    assert all(r in (0.0, 0.25, 0.5, 0.75, 1.0) for r in rates)
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 2
    assert all(t.params["replacement_rate"] == 0.0 for t in trials if t.user_attrs.get("baseline"))
    if sampler == "grid":  # 6 points, 6 trials: each once, across two worker seeds
        assert len({(t.params["beta"], t.params["replacement_rate"]) for t in trials}) == 6


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_baseline_is_scheduled_once_by_workers_starting_together(tmp_path):
    import threading

    import optuna

    from semidisent.search.study import open_storage, open_study
    from semidisent.stages.search import init_study

    params = _study_params(tmp_path, "tracking.enabled=false", "search.baseline_trials=3")
    study = open_study(params, open_storage(params.search))
    barrier, errors = threading.Barrier(4), []

    def worker() -> None:
        try:
            barrier.wait()
            init_study(params)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    asked = _ask_all(params, study, len(study.get_trials()), seed=0)
    baseline = [t.number for t in asked if t.user_attrs.get("baseline")]
    assert len(baseline) == 3 and all(asked[n].params["replacement_rate"] == 0 for n in baseline)
    # whatever a racing worker enqueued beyond that is an ordinary, sampled trial
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials())


def test_baseline_capped_by_budget_and_ignored_without_a_searched_rate(tmp_path, caplog):
    from semidisent.search.study import open_storage, open_study
    from semidisent.stages.search import init_study

    params = _study_params(tmp_path, "tracking.enabled=false", "search.n_trials=1")
    init_study(params)
    study = open_study(params, open_storage(params.search))
    assert len(study.get_trials()) == 1  # at most search.n_trials: nothing left waiting
    fixed = _study_params(
        tmp_path, "tracking.enabled=false", "search.space={beta: {low: 1, high: 4}}"
    )
    with caplog.at_level("WARNING"):
        init_study(fixed)
    assert "search.baseline_trials = 2 is ignored" in caplog.text
    assert "train.replacement_rate = 0.5" in caplog.text
    assert open_study(fixed, open_storage(fixed.search)).get_trials() == []


def test_summary_reports_the_best_p0_trial_beside_the_best(tmp_path):
    import dataclasses as dc

    from semidisent.search import results

    trials = [
        _frozen(0, "COMPLETE", [0.20], {"beta": 2.0, "replacement_rate": 0.0}, {"mig": 0.10}),
        _frozen(1, "COMPLETE", [0.25], {"beta": 8.0, "replacement_rate": 0.0}, {"mig": 0.30}),
        _frozen(2, "COMPLETE", [0.50], {"beta": 4.0, "replacement_rate": 0.5}, {"mig": 0.40}),
        _frozen(3, "PRUNED", [0.90], {"beta": 1.0, "replacement_rate": 0.0}, inter={250: 0.9}),
    ]
    view = _view()
    s = results.summary(trials, view, {"complete": 3, "pruned": 1})
    base = s["baseline"]
    assert s["best"]["trial"] == 2
    assert base["trial"] == 1 and base["val_mig"] == 0.25 and base["gt"] == {"mig": 0.30}
    assert base["params"] == {"beta": 8.0, "replacement_rate": 0.0}
    assert base["trials"] == 3 and base["complete"] == 2  # the pruned one never ranks
    assert base["best_minus_baseline"]["val_mig"] == pytest.approx(0.25)
    assert base["best_minus_baseline"]["gt"]["mig"] == pytest.approx(0.10)
    assert "note" not in base
    png = results.plot_trials(tmp_path / "t.png", trials, view)
    assert png.read_bytes()[:4] == b"\x89PNG"

    # p = 0 trials that did not complete: said plainly
    s = results.summary(trials[2:], view, {})
    assert s["baseline"]["trial"] is None
    assert s["baseline"]["note"].startswith("no p = 0 trial completed (1 p = 0 trial(s): PRUNED")
    assert results.summary([], view, {})["baseline"]["note"] == "no p = 0 trial completed"
    # the rate not searched: the fixed value is every trial's
    import optuna

    only_beta = optuna.trial.create_trial(
        value=0.3,
        params={"beta": 2.0},
        distributions={"beta": optuna.distributions.FloatDistribution(1, 16, log=True)},
    )
    only_beta.number = 0
    fixed = dc.replace(view, space=("beta",))
    s = results.summary([only_beta], fixed, {})
    assert s["baseline"]["trial"] is None and "not searched" in s["baseline"]["note"]
    assert "train.replacement_rate = 0.5" in s["baseline"]["note"]
    zero = dc.replace(fixed, fixed={"beta": 4.0, "replacement_rate": 0.0})
    s = results.summary([only_beta], zero, {})
    assert s["baseline"]["trial"] == 0 and s["baseline"]["best_minus_baseline"]["val_mig"] == 0
    results.plot_trials(tmp_path / "fixed.png", [only_beta], fixed)


# ------------------------------------------------------------------------------ gamma_threshold


@pytest.mark.parametrize(
    ("schedule", "threshold", "ok"),
    [("ramp", 899, True), ("ramp", 900, False), ("switch", 898, True), ("switch", 899, False)],
)
def test_gamma_threshold_must_fit_train_steps(schedule, threshold, ok):
    over = ["train.steps=900", f"train.gamma_schedule={schedule}"]
    over.append(f"train.gamma_threshold={threshold}")
    if ok:
        assert load_params(ROOT / "params.yaml", over).train.gamma_threshold == threshold
        return
    with pytest.raises(ParamsError) as e:
        load_params(ROOT / "params.yaml", over)
    msg = str(e.value)
    assert f"train.gamma_threshold = {threshold}" in msg
    assert f"train.gamma_schedule = {schedule}" in msg and "train.steps = 900" in msg


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["train.gamma_schedule=switch", "train.gamma_threshold=250000"],
         "train.gamma_threshold = 250000"),
        (["train.gamma_schedule=ramp", "train.gamma_threshold=50",
          "search.space.gamma_threshold={low: 100, high: 300}"],
         "search.space.gamma_threshold.high (train.gamma_threshold) = 300"),
        (["train.gamma_threshold=299", "search.space.gamma_schedule={choices: [fixed, switch]}"],
         "train.gamma_threshold = 299"),
    ],
)  # fmt: skip
def test_search_refuses_a_gamma_threshold_no_trial_reaches(tmp_path, overrides, named):
    """Checked before the data, the storage or any trial; `semidisent train` is not stopped."""
    from semidisent.stages.search import init_study, run_search

    base = ["train.steps=300000", "search.steps=300", "tracking.enabled=false"]
    params = _study_params(tmp_path, *base, *overrides)  # loads: train.steps fits
    for call in (
        lambda: run_search(params, tmp_path / "missing", tmp_path / "out"),
        lambda: init_study(params),
    ):
        with pytest.raises(ParamsError) as e:
            call()
        msg = str(e.value)
        assert named in msg and "train.gamma_schedule" in msg and "search.steps = 300" in msg
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "out").exists()


def test_trial_configs_are_checked_with_the_steps_they_run():
    from semidisent.search.objective import trial_train_params

    over = ["train.gamma_schedule=ramp", "train.gamma_threshold=250", "search.steps=300"]
    params = load_params(ROOT / "params.yaml", over)
    assert trial_train_params(params, {"gamma_threshold": 299}).steps == 300
    with pytest.raises(ParamsError, match=r"train\.gamma_threshold = 300.*train\.steps = 300"):
        trial_train_params(params, {"gamma_threshold": 300})  # a trial's steps: search.steps


# ------------------------------------------------------------------------------ model families

FAMILIES = "search.space.model.name={choices: [s2vae, s2_factor_vae]}"
GAMMA = "search.space.s2_factor_vae.gamma={low: 5, high: 50, log: true}"


def test_space_accepts_model_name_and_family_keys(tmp_path):
    """model.name (categorical over the families) and <family>.<key> (checked with that key's
    own rule); the dotted key as -S writes it and the nested form dvc exp run -S writes agree."""
    import yaml
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from semidisent.search.space import parse_space
    from semidisent.search.study import distributions

    params = load_params(ROOT / "params.yaml", [FAMILIES, GAMMA])
    assert list(params.search.space)[-2:] == ["model.name", "s2_factor_vae.gamma"]
    d = distributions(parse_space(params.search.space))
    assert d["model.name"] == CategoricalDistribution(["s2vae", "s2_factor_vae"])
    assert d["s2_factor_vae.gamma"] == FloatDistribution(5.0, 50.0, log=True)
    # a bound of a family key overridden in place (not a new nested entry)
    low = load_params(
        ROOT / "params.yaml", [FAMILIES, GAMMA, "search.space.s2_factor_vae.gamma.low=7"]
    )
    assert low.search.space["s2_factor_vae.gamma"] == {"low": 7, "high": 50, "log": True}
    # the nested form (what `dvc exp run -S search.space.s2_factor_vae.gamma=...` writes)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["search"]["space"]["model"] = {"name": {"choices": ["s2vae", "s2_factor_vae"]}}
    raw["search"]["space"]["s2_factor_vae"] = {"gamma": {"low": 5, "high": 50, "log": True}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    nested = load_params(tmp_path / "params.yaml")
    assert parse_space(nested.search.space) == parse_space(params.search.space)
    # ... and -S on it overrides the nested entry
    moved = load_params(tmp_path / "params.yaml", ["search.space.s2_factor_vae.gamma.high=20"])
    assert {d.name: d for d in parse_space(moved.search.space)}["s2_factor_vae.gamma"].high == 20
    # a family key of the fixed model.name needs no searched model.name
    fixed = load_params(ROOT / "params.yaml", ["model.name=s2_factor_vae", GAMMA])
    assert "s2_factor_vae.gamma" in fixed.search.space


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        # a family no trial trains: its key would be drawn for every trial and read by none
        (
            [GAMMA],
            "search.space.s2_factor_vae.gamma",
            "a family the trials train (model.name = s2vae)",
        ),
        (
            ["search.space.model.name={choices: [s2vae, s2_dip_vae]}", GAMMA],
            "search.space.s2_factor_vae.gamma",
            "choices ['s2vae', 's2_dip_vae']): set model.name = s2_factor_vae",
        ),
        # bounds and choices checked with the key's own rule
        (
            ["model.name=s2_factor_vae", "search.space.s2_factor_vae.gamma={low: -1, high: 5}"],
            "search.space.s2_factor_vae.gamma.low = -1",
            ">= 0 (as s2_factor_vae.gamma)",
        ),
        (
            [
                "model.name=s2_factor_vae",
                "search.space.s2_factor_vae.discriminator_units={choices: [0, 32]}",
            ],
            "discriminator_units.choices = 0",
            "> 0 (as s2_factor_vae.discriminator_units)",
        ),
        (
            ["model.name=s2_dip_vae", "search.space.s2_dip_vae.dip_type={low: 1, high: 2}"],
            "search.space.s2_dip_vae.dip_type",
            "choices (s2_dip_vae.dip_type is not numeric)",
        ),
        (
            ["model.name=s2_factor_vae", "search.space.s2_factor_vae.gama={low: 1, high: 2}"],
            "search.space.s2_factor_vae.gama",
            "a key of s2_factor_vae: gamma, discriminator_lr",
        ),
        (
            ["search.space.model.name={choices: [s2vae, vae]}"],
            "search.space.model.name.choices = 'vae'",
            "one of s2vae, s2_factor_vae",
        ),
        (["search.space.model.name={low: 1, high: 2}"], "model.name", "choices (model.name is"),
        (
            ["search.space.model.num_latent={low: 8, high: 12}"],
            "model.num_latent",
            "only searchable",
        ),
        (["search.space.train.beta={low: 1, high: 2}"], "train.beta", "the bare train key beta"),
        (["search.space={foo.x: {low: 1, high: 2}}"], "search.space.foo.x", "a train key (bare"),
        (["search.space.steps={low: 10, high: 20}"], "search.space.steps", "search.steps"),
    ],
)
def test_bad_model_and_family_keys_are_refused_at_load(overrides, key, allowed):
    with pytest.raises(ParamsError) as e:
        load_params(ROOT / "params.yaml", overrides)
    assert key in str(e.value) and allowed in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_trial_params_and_groups_per_family():
    """A trial carries its model.name and its family's section with its values (other families'
    keys do not apply to it), checked as at load; trials of different families never share a
    batched run, and within a family the trainer's structural keys split it."""
    from semidisent.search.objective import TrialRun, trial_groups, trial_run_params
    from semidisent.tracking.base import Tracker

    over = ["search.steps=50", "supervision.labeller=partial"]
    over += ["search.space.model.name={choices: [s2vae, s2_factor_vae, s2_mine_vae]}", GAMMA]
    over.append("search.space.s2_factor_vae.discriminator_units={choices: [32, 64]}")
    params = load_params(ROOT / "params.yaml", over)
    factor = trial_run_params(
        params,
        {"beta": 2.0, "model.name": "s2_factor_vae", "s2_factor_vae.gamma": 20.0,
         "s2_factor_vae.discriminator_units": 32},
    )  # fmt: skip
    assert factor.model.name == "s2_factor_vae" and factor.train.steps == 50
    assert factor.method_params() == dataclasses.replace(
        params.s2_factor_vae, gamma=20.0, discriminator_units=32
    )
    assert factor.train == dataclasses.replace(params.train, steps=50, beta=2.0)
    plain = trial_run_params(params, {"model.name": "s2vae", "s2_factor_vae.gamma": 20.0})
    assert plain.model.name == "s2vae" and plain.method_params() is None
    assert plain.s2_factor_vae == params.s2_factor_vae  # not this trial's family: untouched
    # a combination that only fails together fails the trial, with the cross-section rule
    with pytest.raises(ParamsError, match=r"supervision\.labeller = 'partial'.*s2_mine_vae"):
        trial_run_params(params, {"model.name": "s2_mine_vae"})

    def run(model: str, **keys) -> TrialRun:
        suggested = {"model.name": model, **{f"s2_factor_vae.{k}": v for k, v in keys.items()}}
        return TrialRun(None, trial_run_params(params, suggested), Tracker())

    runs = [
        run("s2vae", gamma=5.0),
        run("s2_factor_vae", gamma=5.0, discriminator_units=32),
        run("s2vae", gamma=40.0),
        run("s2_factor_vae", gamma=40.0, discriminator_units=32),  # gamma varies per model
        run("s2_factor_vae", gamma=5.0, discriminator_units=64),  # a structural key
    ]
    groups = [[runs.index(r) for r in g] for g in trial_groups(runs)]
    assert groups == [[0, 2], [1, 3], [4]]


def test_study_identity_holds_the_sections_of_the_families_trials_train(tmp_path):
    from semidisent.search.study import study_identity, study_name

    def ident(*extra: str) -> tuple[dict, str]:
        p = _study_params(tmp_path, *extra)
        return study_identity(p), study_name(p)

    base, name = ident()
    assert not {"s2_factor_vae", "s2_dip_vae"} & set(base)  # s2vae has no section
    assert ident("s2_dip_vae.lambda_od=3")[1] == name  # a section no trial reads
    fixed, fixed_name = ident("model.name=s2_factor_vae")
    assert fixed["model"]["name"] == "s2_factor_vae" and fixed["s2_factor_vae"]["gamma"] == 10.0
    assert ident("model.name=s2_factor_vae", "s2_factor_vae.discriminator_units=32")[1] != (
        fixed_name
    )
    searched, searched_name = ident(FAMILIES, GAMMA)
    assert "name" not in searched["model"]  # searched: the fixed model.name is no trial's
    assert "gamma" not in searched["s2_factor_vae"]  # searched: in the space
    assert searched["s2_factor_vae"]["discriminator_units"] == 1000
    assert ident(FAMILIES, GAMMA, "model.name=s2_factor_vae")[1] == searched_name
    assert ident(FAMILIES, GAMMA, "s2_factor_vae.discriminator_layers=2")[1] != searched_name


def test_best_params_carry_the_best_trials_family_and_its_keys(tmp_path):
    """best_params.json: the family and its keys of the best trial, by section and as -S
    overrides that load back to its configuration; the Kubeflow train step merges them."""
    import json

    import optuna

    from semidisent.kfp_pipeline.runtime import with_best
    from semidisent.search import results

    dists = {
        "beta": optuna.distributions.FloatDistribution(1, 16, log=True),
        "model.name": optuna.distributions.CategoricalDistribution(["s2vae", "s2_factor_vae"]),
        "s2_factor_vae.gamma": optuna.distributions.FloatDistribution(5, 50, log=True),
    }

    def trial(number: int, value: float, model: str) -> optuna.trial.FrozenTrial:
        p = {"beta": 2.0 + number, "model.name": model, "s2_factor_vae.gamma": 20.0 + number}
        t = optuna.trial.create_trial(value=value, params=p, distributions=dists)
        t.number = number
        return t

    view = results.StudyView(
        name="s", objectives=("val_mig",), directions=("maximize",), space=tuple(dists),
        log_axes=("beta",), fixed={"beta": 4.0, "replacement_rate": 0.5},
        gt_metrics=("mig",), model_name="s2vae",
    )  # fmt: skip
    trials = [trial(0, 0.2, "s2vae"), trial(1, 0.5, "s2_factor_vae"), trial(2, 0.3, "s2vae")]
    best = results.best_params(trials, view, steps=100)
    assert best["trial"] == 1 and best["train"] == {"beta": 3.0}
    assert best["model"] == {"name": "s2_factor_vae"} and best["s2_factor_vae"] == {"gamma": 21.0}
    assert best["overrides"] == ["model.name=s2_factor_vae", "train.beta=3.0",
                                 "s2_factor_vae.gamma=21.0"]  # fmt: skip
    again = load_params(ROOT / "params.yaml", best["overrides"])
    assert (again.model.name, again.train.beta, again.s2_factor_vae.gamma) == (
        "s2_factor_vae", 3.0, 21.0
    )  # fmt: skip
    s = results.summary(trials, view, {})
    assert s["best"]["model"] == "s2_factor_vae"
    assert s["best"]["params"] == {"beta": 3.0, "model.name": "s2_factor_vae",
                                   "s2_factor_vae.gamma": 21.0}  # fmt: skip
    # an s2vae best trial: its family, and no key of another family
    s2vae = results.best_params(trials[::2], view, steps=100)
    assert s2vae["model"] == {"name": "s2vae"} and "s2_factor_vae" not in s2vae
    assert s2vae["overrides"] == ["model.name=s2vae", "train.beta=4.0"]
    rows = results.trial_rows(trials, view)
    assert [r["model.name"] for r in rows] == ["s2vae", "s2_factor_vae", "s2vae"]

    (tmp_path / "best_params.json").write_text(json.dumps(best))
    trained = with_best(load_params(ROOT / "params.yaml"), tmp_path)
    assert trained.model.name == "s2_factor_vae" and trained.s2_factor_vae.gamma == 21.0
    assert trained.train.beta == 3.0
    (tmp_path / "best_params.json").write_text(json.dumps(results.best_params([], view, 1)))
    assert with_best(load_params(ROOT / "params.yaml"), tmp_path) == load_params(
        ROOT / "params.yaml"
    )
