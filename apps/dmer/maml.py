"""MAML over per-annotator tasks, written with torch.func (functional_call + grad) in place of learn2learn.

The inner loop adapts a copy of the parameters to one annotator's support piece with plain gradient steps;
the outer (meta) loss is the adapted model's loss on that annotator's query pieces. Second-order MAML
differentiates through the inner steps (torch.func.grad composes with autograd); `first_order=True` drops
those second derivatives (FOMAML: the inner gradients are treated as constants).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, grad

Params = dict[str, torch.Tensor]


def adapt(
    model: nn.Module,
    params: Params,
    loss_fn: Callable[[nn.Module, Params, tuple], torch.Tensor],
    support: tuple,
    steps: int,
    lr: float,
    first_order: bool = False,
) -> Params:
    """`steps` gradient steps of `loss_fn(model, params, support)` from `params`, at learning rate `lr`."""
    # Buffers (BatchNorm's running statistics) go in as an explicit, non-differentiated input: a transformed
    # function may not update tensors it closes over. The inner steps update this copy only.
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    step = grad(lambda p, b: loss_fn(model, p | b, support))
    with _without_cudnn(True):  # torch.func's gradient-tracking tensors have no storage, which cuDNN's LSTM reads
        for _ in range(steps):
            grads = step(params, buffers)
            params = {k: p - lr * (grads[k].detach() if first_order else grads[k]) for k, p in params.items()}
    return params


def adaptable(model: nn.Module, prefix: str = "") -> Params:
    """The parameters the inner loop changes: those whose names start with `prefix` ("": all)."""
    return {k: p for k, p in model.named_parameters() if k.startswith(prefix)}


def call(model: nn.Module, params: Params, *args, **kwargs):
    """The model run with `params` in place of its parameters (its buffers as they are)."""
    return functional_call(model, params, args, kwargs, strict=False)


def _without_cudnn(off: bool):
    """cuDNN's LSTM has no double backward: second-order MAML runs the LSTM on the native kernels."""
    cudnn = torch.backends.cudnn
    keep = {"benchmark": cudnn.benchmark, "deterministic": cudnn.deterministic, "allow_tf32": cudnn.allow_tf32}
    return cudnn.flags(enabled=not off and cudnn.enabled, **keep)


def meta_loss(
    model: nn.Module,
    tasks: list[dict],
    loss_fn: Callable[[nn.Module, Params, tuple], torch.Tensor],
    steps: int,
    lr: float,
    first_order: bool = False,
    prefix: str = "",
) -> torch.Tensor:
    """Mean over tasks of the query loss after adapting to the support (differentiable in the model's parameters).
    Only the parameters whose names start with `prefix` adapt; the others enter every task as they are."""
    params = adaptable(model, prefix)
    losses = []
    with _without_cudnn(not first_order):
        for task in tasks:
            adapted = adapt(model, params, loss_fn, task["support"], steps, lr, first_order)
            losses.append(loss_fn(model, adapted, task["query"]))
    return torch.stack(losses).mean()
