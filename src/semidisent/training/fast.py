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

Variants (colour / noise) draw from the device's default generator inside the graph (graph-safe
in PyTorch; its state is checkpointed), where eager runs use one generator per model: the two
paths then see different, equally distributed noise. Without a variant the fast and eager paths
draw identical batches and differ only by floating-point (bf16 autocast, fused kernels).
"""

from __future__ import annotations

import logging

import torch

from .optim import adam_step
from .step import Stepper

log = logging.getLogger(__name__)
WARMUP_STEPS = 3


def compile_parts(stepper: Stepper) -> None:
    """Replace the step's draw / forward / update with compiled versions (any device)."""
    stepper.draw = torch.compile(stepper.data.draw, dynamic=False)
    stepper.forward = torch.compile(stepper.model.forward, dynamic=False)
    stepper.update = torch.compile(adam_step, dynamic=False)


def _snapshot(stepper: Stepper) -> tuple[dict[str, torch.Tensor], list, torch.Tensor | None]:
    tensors = {k: v.detach().clone() for k, v in stepper.state_tensors().items()}
    gens = [g.get_state() for g in stepper.generators or []]
    rng = torch.cuda.get_rng_state(stepper.device) if stepper.device.type == "cuda" else None
    return tensors, gens, rng


def _restore(stepper: Stepper, snap: tuple) -> None:
    tensors, gens, rng = snap
    with torch.no_grad():
        for k, v in stepper.state_tensors().items():
            v.copy_(tensors[k])
    for g, s in zip(stepper.generators or [], gens, strict=True):
        g.set_state(s)
    if rng is not None:
        torch.cuda.set_rng_state(rng, stepper.device)


def capture_graph(stepper: Stepper, warmup: int = WARMUP_STEPS) -> torch.cuda.CUDAGraph:
    """Warm up on a side stream, restore the state, capture one step as a CUDA graph."""
    device = stepper.device
    if device.type != "cuda":
        raise ValueError("CUDA graphs need a CUDA device")
    snap = _snapshot(stepper)
    stepper.in_graph = True  # warm up with exactly the code that will be captured
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
    with torch.cuda.graph(graph):
        stepper.step_body()
    torch.cuda.synchronize(device)
    # Capturing records kernels without running them; restore anyway so that nothing a capture
    # might have touched (the generator's offset) differs from an eager run's start.
    _restore(stepper, snap)
    stepper.graph = graph
    return graph


def enable_fast(stepper: Stepper, use_graph: bool | None = None) -> dict[str, bool]:
    """Turn on the fast path; returns what is on (compiled, cuda_graph)."""
    if stepper.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    compile_parts(stepper)
    graph = stepper.device.type == "cuda" if use_graph is None else use_graph
    if graph:
        capture_graph(stepper)
    log.info("fast path: compiled step%s", " replayed as a CUDA graph" if graph else "")
    return {"compiled": True, "cuda_graph": graph}
