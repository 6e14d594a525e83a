"""Training: counter RNG, Adam, device-resident sampling, the loop, batched models, the CLI.

Everything runs the real code on the 192-image dSprites grid at tiny batch sizes (CPU).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from semidisent.artifacts.prepared import load_prepared
from semidisent.config import load_params
from semidisent.config.schema import TrainParams
from semidisent.data.variants import ColorVariant
from semidisent.models.io import load_model
from semidisent.training import NonFiniteLossError, group_configs, train, train_many
from semidisent.training.optim import BETAS, adam_step
from semidisent.training.rng import (
    counter_constants,
    make_key,
    mix32,
    mix32_int,
    random_bits,
    to_index,
    to_normal,
    to_uniform,
)
from semidisent.training.sampler import DeviceData
from semidisent.training.step import decodes_labelled

# Subprocesses too (see _one_thread).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TINY = ["train.batch_size=8", "train.labelled_batch_size=4", "train.log_every=2"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny batches gain nothing from intra-op threads, and on a shared 2-core machine an OpenMP
    barrier waiting for a descheduled thread can stall a step for seconds."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _params(small_prepared, *extra: str):
    path, overrides = small_prepared
    params = load_params(None, [*overrides, *TINY, *extra])
    return params, load_prepared(path, params)


def _state(vae) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in vae.state_dict().items()}


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _adam_step_bound(steps: int) -> float:
    """The largest |m_hat / (sqrt(v_hat) + eps)| Adam can produce in its first ``steps`` steps,
    whatever the gradients: by Cauchy-Schwarz, sum_s a_s g_s <= sqrt(sum_s a_s^2 / b_s) *
    sqrt(sum_s b_s g_s^2), with a_s, b_s the bias-corrected weights of m_hat and v_hat."""
    b1, b2 = BETAS
    worst = 0.0
    for t in range(1, steps + 1):
        a = [(1 - b1) * b1 ** (t - s) / (1 - b1**t) for s in range(1, t + 1)]
        b = [(1 - b2) * b2 ** (t - s) / (1 - b2**t) for s in range(1, t + 1)]
        worst = max(worst, sum(x * x / y for x, y in zip(a, b, strict=True)) ** 0.5)
    return worst


def _assert_same_training(a: dict, b: dict, steps: int, lr: float, rounding: float = 0.01) -> None:
    """Two runs that saw the same batches and noise end with the same parameters, up to what
    training makes of float rounding (batched grouped kernels and single-model kernels sum in
    another order; the rounding differs by machine and library build). Two amplifiers turn
    rounding into visible differences: Adam divides each gradient by its running RMS, so an
    entry whose true gradient is about 0 may move a full step either way; and a ReLU whose
    input rounding pushes across 0 for one image changes the gradient of its whole weight row
    (seen: 0.3% of the entries after 2 steps and 1.8% after 4 in one tiny configuration; 2.6e-4
    after 4 steps on another machine). Neither can move an entry further than Adam's bound,
    2 * lr * _adam_step_bound per step. A real mismatch moves many entries: measured here, a
    10% change of beta, gamma_sup or lr, or one step less, changes 18% to 97% of the entries by
    more than 1% of a step. Hence: every entry within Adam's bound, and at most 5% of the
    entries beyond ``rounding`` (default 1%) of a step.
    """
    bound = 2.0 * lr * steps * _adam_step_bound(steps)
    diff = torch.cat([(a[k].double() - b[k].double()).abs().flatten() for k in a])
    assert float(diff.max()) <= bound, (float(diff.max()), bound)
    beyond = float((diff > rounding * lr).double().mean())
    assert beyond <= 0.05, (
        f"{beyond:.2%} of the entries differ by more than {rounding:.0%} of a step"
    )


# ------------------------------------------------------------------------------ counter RNG


def test_uniforms_never_reach_one_so_normals_stay_finite():
    """The top 24-bit cell's centre, 1 - 2^-25, rounds to 1.0 in float32: it must not (erfinv(1)
    is inf, Gumbel's -log(-log 1) too); every other cell keeps its value."""
    bits = torch.tensor([2**32 - 1, 2**32 - 257, 0], dtype=torch.int64)
    u = to_uniform(bits)
    assert u[0] == 1.0 - 2.0**-24 and u[1] == 1.0 - 2.0**-23 and u[2] == 2.0**-25
    assert torch.isfinite(to_normal(bits)).all()


def test_hash_matches_its_integer_reference_and_is_uniform():
    xs = [0, 1, 2, 12345, 2**31, 2**32 - 1]
    assert mix32(torch.tensor(xs)).tolist() == [mix32_int(x) for x in xs]
    counters = counter_constants(200_000, "cpu")
    keys = torch.tensor([make_key(0, 1), make_key(1, 1)])
    bits = random_bits(keys, torch.tensor(7), counters)
    assert bits.shape == (2, 200_000) and bits.min() >= 0 and bits.max() < 2**32
    u = to_uniform(bits)
    assert u.min() > 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.003 and abs(u.var().item() - 1 / 12) < 0.002
    z = to_normal(bits)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    counts = torch.bincount(to_index(bits[0], 10), minlength=10).float()
    chi2 = ((counts - 20_000) ** 2 / 20_000).sum().item()
    assert chi2 < 30  # 9 dof: p < 0.001 above 27.9
    # Streams of different keys and of consecutive steps are uncorrelated.
    u_next = to_uniform(random_bits(keys, torch.tensor(8), counters))
    corr = torch.corrcoef(torch.stack([u[0], u[1], u_next[0]]))
    assert (corr - torch.eye(3)).abs().max() < 0.01
    # Deterministic: a function of (key, step, counter) only.
    assert torch.equal(bits, random_bits(keys, torch.tensor(7), counters))


# ------------------------------------------------------------------------------ Adam


def test_adam_matches_torch_adam_and_masked_models_stay_frozen():
    g = torch.Generator().manual_seed(0)
    p_ref = torch.randn(3, 5, generator=g, requires_grad=True)
    opt = torch.optim.Adam([p_ref], lr=0.01)
    p = p_ref.detach().clone()  # batched: 3 models of 5 parameters
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    count = torch.zeros(3)
    active = torch.tensor([True, True, False])
    lr = torch.full((3,), 0.01)
    frozen = p[2].clone()
    for _ in range(5):
        grad = torch.randn(3, 5, generator=g)
        p_ref.grad = grad.clone()
        opt.step()
        adam_step([p], [grad], [m], [v], count, lr, active, batched=True)
    assert torch.allclose(p[:2], p_ref.detach()[:2], atol=1e-6)
    assert torch.equal(p[2], frozen) and not m[2].any() and count.tolist() == [5, 5, 0]


# ------------------------------------------------------------------------------ sampling


def test_device_data_unpacks_bits_and_cycles_only_the_training_pool(small_prepared):
    _, prepared = _params(small_prepared)
    mask = prepared.mask
    data = DeviceData(prepared.dataset, mask, torch.device("cpu"), 8, 5, 10)
    assert data.packed and data.images.shape[-1] == 8  # 64 px packed in 8 bytes
    keys = torch.tensor([make_key(0, 1), make_key(3, 1)])
    batch = data.draw(keys, torch.tensor(0))
    assert batch.x_u.shape == (2, 8, 1, 64, 64) and batch.x_l.shape == (5, 1, 64, 64)
    assert set(batch.x_u.unique().tolist()) <= {0.0, 1.0}
    # The unpacked rows equal the store's own (numpy) unpacking of the sampled rows.
    idx = to_index(random_bits(keys, torch.tensor(0), data._counters)[:, :8], data.num_rows)
    assert data.num_rows == prepared.dataset.num_rows == 192
    expected = prepared.dataset.images(idx[1].numpy()).astype(np.float32) / 255
    assert np.array_equal(batch.x_u[1].numpy(), expected)
    assert not torch.equal(batch.x_u[0], batch.x_u[1])  # each model its own stream
    # Labelled: positions (s * B_l + i) mod n_train over the training rows, in pool order.
    train_rows = mask.rows[~mask.is_validation]
    assert len(train_rows) == 36 and not set(train_rows) & set(mask.rows[mask.is_validation])
    seen = []
    for s in range(15):  # 75 draws: two full cycles of 36 and a bit
        b = data.draw(keys, torch.tensor(s))
        pos = [(s * 5 + i) % 36 for i in range(5)]
        assert torch.equal(b.y_l, torch.from_numpy(mask.labels[~mask.is_validation][pos]))
        seen.extend(train_rows[pos].tolist())
    want = prepared.dataset.images(train_rows[[(14 * 5 + i) % 36 for i in range(5)]])
    assert np.array_equal(b.x_l.numpy(), want.astype(np.float32) / 255)
    assert set(seen) == set(train_rows.tolist())


# ------------------------------------------------------------------------------ the loop


def test_single_model_learns_and_reports(small_prepared):
    params, prepared = _params(
        small_prepared, "train.steps=30", "train.log_every=10", "train.lr=0.001"
    )
    result = train(prepared, params.train, params.model, progress=False)
    assert result.status == "completed" and result.steps == 30
    assert [c["step"] for c in result.curves] == [10, 20, 30]
    first, last = result.curves[0], result.curves[-1]
    assert last["recon"] < first["recon"] - 200  # 4096 Bernoulli pixels: starts near 2840
    assert 0.0 < last["replaced"] < 1.0  # p = 0.5 per example
    stats = result.stats
    assert stats["steps_per_s"] > 0 and stats["fast_path"] is False
    assert stats["images_per_s"] == pytest.approx(stats["steps_per_s"] * 12)
    assert stats["final_losses"]["loss"] == last["loss"]
    # Same parameters, same result: the run is a function of its parameters.
    again = train(prepared, params.train, params.model, progress=False)
    assert _max_diff(_state(result.model), _state(again.model)) == 0.0


def test_batched_models_equal_separate_runs(small_prepared):
    params, prepared = _params(small_prepared, "train.steps=4")
    base = params.train
    configs = [
        dataclasses.replace(base, seed=0, beta=4.0, replacement_rate=0.5),
        dataclasses.replace(base, seed=1, beta=1.0, replacement_rate=0.0, lr=3e-4),
        dataclasses.replace(
            base, seed=2, beta=8.0, replacement_rate=1.0, gamma_sup=3.0,
            gamma_schedule="ramp", gamma_threshold=3,
        ),
    ]  # fmt: skip
    batched = train_many(prepared, configs, params.model, progress=False)
    assert [r.index for r in batched] == [0, 1, 2]
    assert batched[0].stats["batched_models"] == 3
    for cfg, res in zip(configs, batched, strict=True):
        alone = train(prepared, cfg, params.model, progress=False)
        assert alone.stats["batched_models"] == 1
        _assert_same_training(_state(alone.model), _state(res.model), cfg.steps, cfg.lr)
        for a, b in zip(alone.curves, res.curves, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_labelled_recon_modes_batched_equal_separate_runs(small_prepared):
    """labelled_recon all, posterior noise and the embed target (a bisection inside the step)
    under vmap: a batched run with p = 0 and p = 1 equals the two separate runs."""
    params, prepared = _params(
        small_prepared,
        "train.steps=4",
        "train.labelled_recon=all",
        "train.replacement_noise=posterior",
        "train.supervised_loss=embed",
        "train.labelled_weight=0.25",
    )
    configs = [
        dataclasses.replace(params.train, seed=s, replacement_rate=p)
        for s, p in [(0, 0.0), (1, 1.0)]
    ]
    batched = train_many(prepared, configs, params.model, progress=False)
    assert batched[0].stats["batched_models"] == 2
    for cfg, res in zip(configs, batched, strict=True):
        alone = train(prepared, cfg, params.model, progress=False)
        _assert_same_training(_state(alone.model), _state(res.model), cfg.steps, cfg.lr)
        assert res.curves[-1]["lab"] > 0  # "all" decodes x_l at p = 0 too


def test_the_labelled_decoder_pass_runs_only_when_it_can_count():
    base = TrainParams()
    rates = [dataclasses.replace(base, replacement_rate=p) for p in (0.0, 0.0)]
    assert not decodes_labelled(rates)  # replaced, p = 0: exactly Locatello et al.
    assert decodes_labelled([*rates, dataclasses.replace(base, replacement_rate=0.1)])
    every = [dataclasses.replace(c, labelled_recon="all") for c in rates]
    assert decodes_labelled(every)
    assert not decodes_labelled([dataclasses.replace(c, labelled_weight=0.0) for c in every])


def test_grouping_and_stopping_a_model_freezes_it(small_prepared):
    params, prepared = _params(small_prepared, "train.steps=6")
    base = params.train
    configs = [
        dataclasses.replace(base, seed=0),
        dataclasses.replace(base, seed=1, batch_size=4),  # another structure: its own group
        dataclasses.replace(base, seed=2),
    ]
    assert group_configs(configs) == [[0, 2], [1]]
    calls = []

    def prune(step, metrics):
        calls.append((step, sorted(metrics)))
        return [2] if step == 2 else []

    results = train_many(prepared, configs, params.model, progress=False, callback=prune)
    assert calls[:3] == [(2, [0, 2]), (4, [0]), (6, [0])]
    assert [r.status for r in results] == ["completed", "completed", "stopped"]
    stopped = results[2]
    assert stopped.steps == 2 and [c["step"] for c in stopped.curves] == [2]
    # The stopped model is exactly the model trained for 2 steps.
    short = train(
        prepared, dataclasses.replace(base, seed=2, steps=2), params.model, progress=False
    )
    _assert_same_training(_state(short.model), _state(stopped.model), 2, base.lr)


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(
    small_prepared, tmp_path
):
    params, prepared = _params(
        small_prepared, "train.steps=40", "train.lr=1e6", "train.checkpoint_every=1"
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at training step \d+") as e:
        train(prepared, params.train, params.model, progress=False, checkpoint_dir=tmp_path)
    assert "last good checkpoint" in str(e.value)
    files = sorted(tmp_path.glob("ckpt-*.pt"))
    assert files
    payload = torch.load(files[-1], weights_only=True)
    for name, t in payload["state"]["tensors"].items():
        if t.is_floating_point():
            assert torch.isfinite(t).all(), name


def test_colour_variant_batched_and_resumed_from_the_counter_stream(small_prepared, tmp_path):
    params, prepared = _params(small_prepared, "train.steps=4", "train.checkpoint_every=2")
    prepared.dataset.variant = ColorVariant()  # colour dSprites, applied on the device
    configs = [dataclasses.replace(params.train, seed=s, beta=b) for s, b in [(0, 4.0), (1, 2.0)]]
    batched = train_many(prepared, configs, params.model, progress=False)
    assert batched[0].model.config.in_channels == 3
    for cfg, res in zip(configs, batched, strict=True):
        alone = train(prepared, cfg, params.model, progress=False)
        _assert_same_training(_state(alone.model), _state(res.model), cfg.steps, cfg.lr)
    # The colours come from the counter stream (the step counter is checkpointed): a resumed
    # run draws the same colours.
    first = dataclasses.replace(configs[1], steps=2)
    train(prepared, first, params.model, progress=False, checkpoint_dir=tmp_path)
    resumed = train(prepared, configs[1], params.model, progress=False, checkpoint_dir=tmp_path)
    fresh = train(prepared, configs[1], params.model, progress=False)
    assert resumed.stats["resumed_from_step"] == 2
    assert _max_diff(_state(resumed.model), _state(fresh.model)) == 0.0


def test_variant_draws_come_from_the_counter_stream(small_prepared):
    """Colour / noise uniforms are a function of (model's variant key, step) only: the same in a
    batched draw as alone, different for another seed or step (no torch generator state: the
    eager, compiled, graph-replayed and resumed steps see the same colours)."""
    from semidisent.data.variants import NoisyVariant
    from semidisent.training.rng import make_key
    from semidisent.training.step import VARIANT_STREAM

    _, prepared = _params(small_prepared)

    def images(data: DeviceData, k: torch.Tensor, dk: torch.Tensor, st: torch.Tensor) -> tuple:
        b = data.apply_variant(data.draw(dk, st), k, st)
        return b.x_u, b.x_l

    for variant in (ColorVariant(), NoisyVariant()):
        prepared.dataset.variant = variant
        data = DeviceData(prepared.dataset, prepared.mask, torch.device("cpu"), 8, 4, 10)
        keys = torch.tensor([make_key(s, VARIANT_STREAM) for s in (0, 1)])
        data_keys = torch.tensor([make_key(s, 1) for s in (0, 1)])
        step = torch.tensor(3)

        both = images(data, keys, data_keys, step)
        alone = images(data, keys[1:], data_keys[1:], step)
        assert both[0].shape[2] == 3 and both[1].shape == (2, 4, 3, 64, 64)
        assert torch.equal(both[0][1], alone[0][0]) and torch.equal(both[1][1], alone[1][0])
        assert torch.equal(images(data, keys, data_keys, step)[0], both[0])  # no hidden state
        assert not torch.equal(both[1][0], both[1][1])  # each model colours x_l its own way
        assert not torch.equal(images(data, keys, data_keys, step + 1)[1], both[1])


def test_training_in_stretches_equals_one_run(small_prepared, tmp_path):
    """A GroupRun advanced to step 2, then 4, builds once and ends exactly where one
    uninterrupted 4-step run ends (the search trains rung by rung this way); the stretches'
    results carry status running until the run's length."""
    from semidisent.training.trainer import GroupRun

    params, prepared = _params(small_prepared, "train.steps=4", "train.checkpoint_every=2")
    configs = [dataclasses.replace(params.train, seed=s) for s in (0, 1)]
    whole = train_many(prepared, configs, params.model, progress=False)
    group = GroupRun(prepared, configs, [0, 1], params.model, tmp_path, progress=False)
    mid = group.advance(2)
    assert [r.status for r in mid] == ["running", "running"] and mid[0].steps == 2
    end = group.advance()
    assert [r.status for r in end] == ["completed", "completed"]
    for a, b in zip(whole, end, strict=True):
        assert _max_diff(_state(a.model), _state(b.model)) == 0.0
        assert [c["step"] for c in b.curves] == [2, 4]
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.pt"))[-1] == "ckpt-000000004.pt"


def test_replay_check_accepts_the_same_step_and_refuses_another(small_prepared):
    """fast.verify_replay (run after each CUDA graph capture) on CPU, with the eager step as the
    "replay" (accepted) and a step of another learning rate (refused); the state is restored."""
    from semidisent.training.fast import ReplayMismatchError, verify_replay
    from semidisent.training.trainer import build_run

    params, prepared = _params(small_prepared, "train.steps=4")
    stepper = build_run(prepared, [params.train], params.model).stepper
    before = {k: v.clone() for k, v in stepper.state_tensors().items()}
    verify_replay(stepper, stepper.step_body, params.train.lr)

    def other_lr() -> None:
        stepper.lr["model"].mul_(3.0)
        stepper.step_body()
        stepper.lr["model"].div_(3.0)

    with pytest.raises(ReplayMismatchError, match=r"eager step|differ"):
        verify_replay(stepper, other_lr, params.train.lr)
    for k, v in stepper.state_tensors().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.slow
def test_compiled_batched_step_matches_eager_on_cpu(small_prepared):
    """The fast path's compiled parts (draw, vmapped forward, Adam) on CPU, without a graph:
    the code that CUDA captures, checked where no GPU is available (~1 min of compilation)."""
    params, prepared = _params(small_prepared, "train.steps=4")
    configs = [
        dataclasses.replace(params.train, seed=s, beta=b, fast="on")
        for s, b in [(0, 4.0), (1, 1.0)]
    ]
    fast = train_many(prepared, configs, params.model, progress=False)
    assert fast[0].stats["fast_path"] and not fast[0].stats["cuda_graph"]
    eager = train_many(
        prepared, [dataclasses.replace(c, fast="off") for c in configs], params.model,
        progress=False,
    )  # fmt: skip
    for c, a, b in zip(configs, eager, fast, strict=True):
        _assert_same_training(_state(a.model), _state(b.model), c.steps, c.lr)
        assert a.curves[-1]["loss"] == pytest.approx(b.curves[-1]["loss"], rel=1e-4)


# ------------------------------------------------------------------------------ the CLI


def test_cli_train_writes_model_stats_and_curves(small_prepared, tmp_path):
    path, overrides = small_prepared
    sets = ["--params", str(ROOT / "params.yaml")]
    sets += [a for o in [*overrides, *TINY, "train.steps=4"] for a in ("-S", o)]
    out = tmp_path / "model"
    proc = run_cli("train", *sets, "--params", "none.yaml", "--prepared", str(path),
                   "--out", str(out), "-q", env=ONE_THREAD)  # fmt: skip
    assert proc.returncode == 2 and "none.yaml" in proc.stderr  # a missing params file
    proc = run_cli(
        "train",
        *sets,
        "--prepared",
        str(path),
        "--out",
        str(out),
        "-q",
        cwd=tmp_path,
        env=ONE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr
    assert "trained 4 steps" in proc.stdout
    vae, meta = load_model(out / "model.pt")
    manifest = json.loads((path / "manifest.json").read_text())
    assert meta["content_sha256"] == manifest["content_sha256"]
    assert meta["mask_sha256"] == manifest["supervision"]["mask_sha256"]
    assert meta["steps"] == 4 and meta["train"]["batch_size"] == 8 and meta["model"]["num_latent"]
    assert set(meta["final_losses"]) >= {"loss", "recon", "kl", "sup"}
    assert meta["device"].startswith("cpu")
    assert vae(torch.zeros(2, 1, 64, 64)).shape == (2, 10)
    stats = json.loads((out / "train_stats.json").read_text())
    for key in ("steps_per_s", "images_per_s", "final_losses", "mean_losses", "wall_s",
                "device", "torch_version", "fast_path"):  # fmt: skip
        assert key in stats, key
    curves = json.loads((out / "curves.json").read_text())
    assert [c["step"] for c in curves] == [2, 4] and "loss" in curves[0]
    assert sorted(p.name for p in (out / "checkpoints").glob("ckpt-*")) == ["ckpt-000000004.pt"]
    # The experiment's MLflow run (tracking on by default), its id kept for a resumed run.
    run = json.loads((out / "mlflow_run.json").read_text())
    assert json.loads((out / "checkpoints" / "mlflow_run.json").read_text()) == run


def test_cli_refuses_a_mismatched_artifact_and_other_params_on_resume(small_prepared, tmp_path):
    path, overrides = small_prepared
    sets = ["--params", str(ROOT / "params.yaml")]
    sets += [a for o in [*overrides, *TINY, "train.steps=2"] for a in ("-S", o)]
    out = str(tmp_path / "m")
    proc = run_cli("train", *sets, "-S", "supervision.n_labels=30", "--prepared", str(path),
                   "--out", out, "-q", cwd=tmp_path, env=ONE_THREAD)  # fmt: skip
    assert proc.returncode == 2
    assert "supervision.n_labels = 40" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert run_cli("train", *sets, "--prepared", str(path), "--out", out, "-q",
                   cwd=tmp_path, env=ONE_THREAD).returncode == 0  # fmt: skip
    proc = run_cli("train", *sets, "-S", "train.beta=8", "--prepared", str(path), "--out", out,
                   "-q", cwd=tmp_path, env=ONE_THREAD)  # fmt: skip
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "train.beta = 4.0 in the checkpoint but 8.0 now" in proc.stderr


# ------------------------------------------------------------------------------ GPU


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
def test_fast_path_matches_eager_on_cuda(small_prepared, ieee_training):
    params, prepared = _params(
        small_prepared, "train.steps=20", "train.device=cuda", "train.amp=off"
    )
    eager = train(prepared, dataclasses.replace(params.train, fast="off"), params.model,
                  progress=False)  # fmt: skip
    fast = train(prepared, dataclasses.replace(params.train, fast="on"), params.model,
                 progress=False)  # fmt: skip
    assert fast.stats["cuda_graph"] and fast.stats["fast_path"]
    # Same batches and noise (counter RNG), IEEE float32 on both paths (ieee_training): only
    # the kernels' summation order differs (fused compiled kernels, cuDNN's algorithm choice),
    # amplified over 20 steps as _assert_same_training describes, hence rounding = 5%.
    _assert_same_training(
        _state(eager.model), _state(fast.model), 20, params.train.lr, rounding=0.05
    )
    for a, b in zip(eager.curves, fast.curves, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)


@pytest.mark.gpu
@gpu
def test_colour_variant_graph_eager_and_resumed_runs_draw_the_same_colours(
    small_prepared, tmp_path, ieee_training
):
    """One counter stream for the variant in every path: the CUDA-graph run, the eager run and
    a run resumed from a checkpoint end equal (float32, up to kernel rounding)."""
    params, prepared = _params(
        small_prepared, "train.steps=12", "train.device=cuda", "train.amp=off",
        "train.checkpoint_every=6",
    )  # fmt: skip
    prepared.dataset.variant = ColorVariant()
    fast = train(prepared, dataclasses.replace(params.train, fast="on"), params.model,
                 progress=False)  # fmt: skip
    assert fast.stats["cuda_graph"], fast.stats["fast_path_note"]
    eager = train(prepared, dataclasses.replace(params.train, fast="off"), params.model,
                  progress=False)  # fmt: skip
    _assert_same_training(_state(eager.model), _state(fast.model), 12, params.train.lr, 0.05)
    half = dataclasses.replace(params.train, fast="on", steps=6)
    train(prepared, half, params.model, progress=False, checkpoint_dir=tmp_path)
    resumed = train(prepared, dataclasses.replace(half, steps=12), params.model,
                    progress=False, checkpoint_dir=tmp_path)  # fmt: skip
    assert resumed.stats["resumed_from_step"] == 6
    _assert_same_training(_state(fast.model), _state(resumed.model), 12, params.train.lr, 0.05)


@pytest.mark.gpu
@gpu
def test_batched_fast_path_with_bf16_on_cuda(small_prepared):
    params, prepared = _params(small_prepared, "train.steps=20", "train.device=cuda")
    configs = [dataclasses.replace(params.train, seed=s, beta=b) for s, b in [(0, 1.0), (1, 8.0)]]
    results = train_many(prepared, configs, params.model, progress=False)
    assert all(r.status == "completed" for r in results)
    assert results[0].stats["cuda_graph"] and results[0].stats["amp"] == "bf16"
    alone = train(prepared, configs[1], params.model, progress=False)
    assert alone.curves[-1]["loss"] == pytest.approx(results[1].curves[-1]["loss"], rel=0.05)


@pytest.mark.gpu
@gpu
def test_full_dsprites_resident_under_4_gib_on_cuda():
    """The 737,280-image grid stays bit-packed on the device (377 MB); the whole fast-path run,
    data, model, optimiser, graph pool, stays under 4 GiB."""
    from semidisent.artifacts.prepared import Prepared
    from semidisent.config.schema import ModelParams, SupervisionParams, TrainParams
    from semidisent.data.base import GridDataset
    from semidisent.data.store import PackedStore
    from semidisent.supervision.mask import build_mask

    sizes = (3, 6, 40, 32, 32)
    packed = np.zeros((737_280, 1, 64, 8), dtype=np.uint8)
    packed[:, 0, 20:40, 2:5] = 0xFF  # a 24x20 block in every image
    names = ("shape", "scale", "orientation", "posX", "posY")
    dataset = GridDataset("dsprites", names, PackedStore(packed, (1, 64, 64)), sizes)
    mask = build_mask(dataset, SupervisionParams(n_labels=1000))
    prepared = Prepared(None, {"content_sha256": "zeros"}, dataset, mask)  # type: ignore[arg-type]
    torch.cuda.reset_peak_memory_stats()
    result = train(prepared, TrainParams(steps=50, device="cuda"), ModelParams(), progress=False)
    assert result.stats["cuda_graph"]
    assert result.stats["data_resident_bytes"] < 400 * 2**20
    assert result.stats["gpu_memory_peak_bytes"] < 4 * 2**30


def test_device_auto_says_why_a_cuda_build_falls_back_to_the_cpu(monkeypatch, caplog):
    """A CUDA build of torch on a machine whose driver is too old: auto trains on the CPU with a
    warning naming the driver's reason; cuda refuses with the same reason in one line."""
    from semidisent.training import runtime

    def old_driver() -> None:
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040).")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "init", old_driver)
    with caplog.at_level("WARNING", logger="semidisent.training.runtime"):
        assert runtime.resolve_device("auto").type == "cpu"
    assert "driver on your system is too old" in caplog.text and "CPU" in caplog.text
    with pytest.raises(runtime.DeviceError) as err:
        runtime.resolve_device("cuda")
    assert "too old" in str(err.value) and "\n" not in str(err.value)
    assert runtime.resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU-only build: CPU is expected, quiet
    caplog.clear()
    with caplog.at_level("WARNING", logger="semidisent.training.runtime"):
        assert runtime.resolve_device("auto").type == "cpu"
    assert not caplog.text
