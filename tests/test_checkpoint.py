"""Checkpoints: a run killed with SIGKILL resumes to the same final parameters; damaged or
foreign checkpoints are handled; other parameters are refused with the differing keys named."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import BIN, ROOT, run_cli
from semidisent.artifacts.prepared import load_prepared
from semidisent.config import load_params
from semidisent.models.io import load_model
from semidisent.training import CheckpointError, train

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TINY = ["train.batch_size=8", "train.labelled_batch_size=4"]


@pytest.fixture(autouse=True)
def _one_thread():
    """See tests/test_training.py: tiny batches, shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cli_args(small_prepared, out: Path, *extra: str) -> list[str]:
    path, overrides = small_prepared
    sets = [a for o in [*overrides, *TINY, *extra] for a in ("-S", o)]
    return ["train", "--params", str(ROOT / "params.yaml"), *sets, "--prepared", str(path),
            "--out", str(out), "-q"]  # fmt: skip


def _wait_for_checkpoint(proc: subprocess.Popen, ckdir: Path, min_step: int) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        steps = [int(p.stem.split("-")[1]) for p in ckdir.glob("ckpt-*.pt")]
        if steps and max(steps) >= min_step:
            return max(steps)
        if proc.poll() is not None:
            raise AssertionError(f"training ended before step {min_step}: {proc.returncode}")
        time.sleep(0.005)
    raise AssertionError("no checkpoint appeared")


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkilled_training_resumes_to_the_same_parameters(small_prepared, tmp_path):
    extra = ("train.steps=60", "train.checkpoint_every=10", "train.log_every=5")
    full, killed = tmp_path / "full", tmp_path / "killed"
    env = {**os.environ, **ONE_THREAD}
    proc = subprocess.Popen(
        [str(BIN / "semidisent"), *_cli_args(small_prepared, killed, *extra)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for_checkpoint(proc, killed / "checkpoints", 10)
    _kill(proc)  # somewhere after step 10: mid-step, mid-log or mid-checkpoint
    assert not (killed / "model.pt").exists()
    # Resume, kill again later, resume to the end.
    proc = subprocess.Popen(
        [str(BIN / "semidisent"), *_cli_args(small_prepared, killed, *extra)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for_checkpoint(proc, killed / "checkpoints", 30)
    _kill(proc)
    done = run_cli(*_cli_args(small_prepared, killed, *extra), cwd=tmp_path, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    ref = run_cli(*_cli_args(small_prepared, full, *extra), cwd=tmp_path, env=ONE_THREAD)
    assert ref.returncode == 0, ref.stderr

    a, meta_a = load_model(full / "model.pt")
    b, meta_b = load_model(killed / "model.pt")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert meta_a["final_losses"] == meta_b["final_losses"]
    curves_a = json.loads((full / "curves.json").read_text())
    assert curves_a == json.loads((killed / "curves.json").read_text())
    assert [c["step"] for c in curves_a] == list(range(5, 61, 5))
    stats = json.loads((killed / "train_stats.json").read_text())
    assert stats["resumed_from_step"] >= 30
    # Only complete checkpoints remain (the last KEEP), no temporary files.
    names = sorted(p.name for p in (killed / "checkpoints").glob("ckpt-*"))
    assert names == ["ckpt-000000050.pt", "ckpt-000000060.pt"]


def _setup(small_prepared, *extra: str):
    path, overrides = small_prepared
    params = load_params(None, [*overrides, *TINY, "train.log_every=2", *extra])
    return params, load_prepared(path, params)


def _equal_models(a, b) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_resuming_with_more_steps_equals_a_longer_run(small_prepared, tmp_path):
    params, prepared = _setup(small_prepared, "train.steps=4", "train.checkpoint_every=3")
    train(prepared, params.train, params.model, progress=False, checkpoint_dir=tmp_path)
    longer = dataclasses.replace(params.train, steps=8)
    resumed = train(prepared, longer, params.model, progress=False, checkpoint_dir=tmp_path)
    fresh = train(prepared, longer, params.model, progress=False)
    assert resumed.stats["resumed_from_step"] == 4
    assert _equal_models(resumed.model, fresh.model)
    assert resumed.curves == fresh.curves
    # A finished run resumed as is trains nothing and returns the same model.
    again = train(prepared, longer, params.model, progress=False, checkpoint_dir=tmp_path)
    assert again.stats["steps_run"] == 0 and _equal_models(again.model, fresh.model)
    with pytest.raises(CheckpointError, match=r"at step 8, beyond train\.steps = 5"):
        train(prepared, dataclasses.replace(params.train, steps=5), params.model,
              progress=False, checkpoint_dir=tmp_path)  # fmt: skip


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(small_prepared, tmp_path):
    params, prepared = _setup(small_prepared, "train.steps=6", "train.checkpoint_every=2")
    short = dataclasses.replace(params.train, steps=4)
    train(prepared, short, params.model, progress=False, checkpoint_dir=tmp_path)
    newest = tmp_path / "ckpt-000000004.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated after its rename
    (tmp_path / ".ckpt-000000006.pt.tmp-1").write_bytes(b"torn write of a killed process")
    resumed = train(prepared, params.train, params.model, progress=False, checkpoint_dir=tmp_path)
    assert resumed.stats["resumed_from_step"] == 2
    fresh = train(prepared, params.train, params.model, progress=False)
    assert _equal_models(resumed.model, fresh.model)
    assert not list(tmp_path.glob(".ckpt-*"))


def test_other_parameters_are_refused_naming_each_difference(small_prepared, tmp_path):
    params, prepared = _setup(small_prepared, "train.steps=2")
    train(prepared, params.train, params.model, progress=False, checkpoint_dir=tmp_path)
    other = dataclasses.replace(params.train, replacement_rate=0.25, supervised_loss="l2")
    with pytest.raises(CheckpointError) as e:
        train(prepared, other, params.model, progress=False, checkpoint_dir=tmp_path)
    msg = str(e.value)
    assert "train.replacement_rate = 0.5 in the checkpoint but 0.25 now" in msg
    assert "train.supervised_loss = 'xent' in the checkpoint but 'l2' now" in msg
    assert f"Remove {tmp_path}" in msg
    # Execution-only keys may change on resume.
    ok = dataclasses.replace(params.train, log_every=1, checkpoint_every=7)
    assert train(prepared, ok, params.model, progress=False, checkpoint_dir=tmp_path).steps == 2
