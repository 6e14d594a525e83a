"""The fast path: compiled step parts, and on CUDA the whole step replayed as one CUDA graph.

Why: at batch 64 the standard model's step is a few dozen small kernels; an eager loop is
bound by kernel launches and Python, not by the GPU (DESIGN.md, performance principles).

Design:

1. Compile (``torch.compile``, inductor, no cudagraphs of its own) three parts of
   :meth:`Stepper.step_body`: the batch draw (counter RNG + gather + bit unpacking fuse into a
   few kernels), the forward with the losses (autograd then runs the compiled backward), and
   the Adam update (a handful of fused kernels instead of ~10 per parameter tensor).
2. On CUDA, capture the whole step body (draw, forward, backward, update, accumulation, step
   counter increment) once with ``torch.cuda.graph`` and replay it every step. Every input of
   the step is device state that the step itself updates in place (the step counter drives the
   counter-based RNG and the labelled-pool position), so a replay needs no host input and the
   loop issues one ``graph.replay()`` per step, never synchronising until a log step.
3. Warm-up before capture (compilation, cuDNN autotuning, allocator) runs real steps on a side
   stream; every state tensor is snapshotted before and restored after, so the warm-up leaves
   no trace: the fast run trains exactly the steps an eager run would.
4. The capture runs under ``torch.compiler.set_stance("fail_on_recompile")``: a recompilation
   inside a capture is illegal and would fail obscurely, so it fails at once instead. After the
   capture, one replay is checked against one step of the compiled parts without the graph on
   the same state (:func:`verify_replay`); if they disagree, or the capture fails, the run falls
   back to the compiled step without a graph and says why (``fast_path_note``).

Every random number of the step (indices, noise, the variants' colours) comes from the
counter-based stream, so the fast and eager paths draw identical batches and differ only by
floating point (bf16 autocast, fused kernels, TF32).

TF32 and cuDNN autotuning are switched on only while the trainer runs the step
(:func:`semidisent.backends.fast_training_kernels`), never process-wide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from .step import UPDATES, Stepper

log = logging.getLogger(__name__)
WARMUP_STEPS = 3


def compile_parts(stepper: Stepper) -> None:
    """Replace the step's draw / forward / update with compiled versions (any device)."""
    stepper.draw = torch.compile(stepper.data.draw, dynamic=False)
    stepper.forward = torch.compile(stepper.model.forward, dynamic=False)
    stepper.updates = {
        kind: torch.compile(update, dynamic=False) for kind, update in UPDATES.items()
    }


Snapshot = dict[str, torch.Tensor]


def _snapshot(stepper: Stepper) -> Snapshot:
    return {k: v.detach().clone() for k, v in stepper.state_tensors().items()}


def _restore(stepper: Stepper, snap: Snapshot) -> None:
    with torch.no_grad():
        for k, v in stepper.state_tensors().items():
            v.copy_(snap[k])


class ReplayMismatchError(RuntimeError):
    """One graph replay did not reproduce one step of the same compiled code."""


def verify_replay(stepper: Stepper, replay: Callable[[], None], lr_bound: float) -> None:
    """Check that ``replay()`` (one step) equals one ``stepper.step_body()`` from the same state;
    the state is restored afterwards. Raises :class:`ReplayMismatchError` with the reason.

    Both run the same compiled kernels on the same inputs, so they agree up to the order of
    floating-point reductions (atomics in backward kernels). One Adam step moves an entry by at
    most ``lr_bound`` (lr times Adam's first-step ratio, 1), so a near-zero gradient whose sign
    rounding flips can differ by 2 * lr_bound; every other entry agrees far below 1% of a step.
    Accepted: the losses within 1e-3 relative, every parameter entry within 2 * lr_bound, and at
    most 5% of the entries beyond 1% of lr_bound (as the CPU equivalence tests).
    """
    snap = _snapshot(stepper)
    replay()
    graph_state = _snapshot(stepper)
    _restore(stepper, snap)
    stepper.step_body()
    eager_state = _snapshot(stepper)
    _restore(stepper, snap)
    acc_g, acc_e = graph_state["acc"].double(), eager_state["acc"].double()
    if not torch.isfinite(acc_g).all():
        raise ReplayMismatchError("the replayed step produced non-finite statistics")
    rel = ((acc_g - acc_e).abs() / acc_e.abs().clamp(min=1e-6)).max().item()
    if rel > 1e-3:
        raise ReplayMismatchError(
            f"replayed losses differ from the eager step's by {rel:.2e} (> 1e-3)"
        )
    if not torch.equal(graph_state["step"], eager_state["step"]):
        raise ReplayMismatchError("the replayed step did not advance the step counter")
    diffs = [
        (graph_state[k].double() - eager_state[k].double()).abs().flatten()
        for k in graph_state
        if k.startswith("params/")
    ]
    diff = torch.cat(diffs)
    if diff.max().item() > 2.0 * lr_bound:
        raise ReplayMismatchError(
            f"a parameter moved {diff.max().item():.2e} away from the eager step "
            f"(more than two Adam steps, {2.0 * lr_bound:.1e})"
        )
    beyond = (diff > 0.01 * lr_bound).double().mean().item()
    if beyond > 0.05:
        raise ReplayMismatchError(
            f"{beyond:.1%} of the parameters differ by more than 1% of a step"
        )


def capture_graph(stepper: Stepper, warmup: int = WARMUP_STEPS) -> torch.cuda.CUDAGraph:
    """Warm up on a side stream, restore the state, capture one step as a CUDA graph (no
    recompilation allowed inside the capture)."""
    device = stepper.device
    if device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device")
    snap = _snapshot(stepper)
    torch.cuda.synchronize(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            stepper.step_body()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    _restore(stepper, snap)
    graph = torch.cuda.CUDAGraph()
    with torch.compiler.set_stance("fail_on_recompile"), torch.cuda.graph(graph):
        stepper.step_body()
    torch.cuda.synchronize(device)
    # Capturing records kernels without running them; restore anyway so that nothing a capture
    # might have touched differs from an eager run's start.
    _restore(stepper, snap)
    return graph


def enable_fast(stepper: Stepper, use_graph: bool | None = None) -> dict[str, Any]:
    """Turn on the fast path; returns what is on (compiled, cuda_graph) and, when the graph
    was wanted but not used, why (fast_path_note). Call inside
    :func:`semidisent.backends.fast_training_kernels` on CUDA."""
    compile_parts(stepper)
    want_graph = stepper.device.type == "cuda" if use_graph is None else use_graph
    info: dict[str, Any] = {"compiled": True, "cuda_graph": False, "fast_path_note": ""}
    if want_graph:
        try:
            graph = capture_graph(stepper)
            verify_replay(stepper, graph.replay, max(float(v.max()) for v in stepper.lr.values()))
        except Exception as e:  # any capture failure: the compiled step still works
            info["fast_path_note"] = (
                f"CUDA graph not used ({type(e).__name__}: {e}); compiled step without a graph"
            )
            log.warning("%s", info["fast_path_note"])
            torch.cuda.synchronize(stepper.device)
        else:
            stepper.graph = graph
            info["cuda_graph"] = True
    log.info(
        "fast path: compiled step%s", " replayed as a CUDA graph" if info["cuda_graph"] else ""
    )
    return info
