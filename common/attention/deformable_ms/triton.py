"""Multi-scale deformable attention core in Triton: forward and backward, same semantics as `deformable_ms_torch`.

Triton is imported only inside the functions below (the kernels live in `kernels.py`), so the package
imports without it. Float inputs bf16 / fp16 / fp32, each in its own dtype (autocast hands over bf16 values
with fp32 locations and softmaxed weights), fp32 math inside; the output has value's dtype and each grad its
input's dtype. The value grad is scattered with fp32 atomic adds into a zero-filled fp32 buffer, then cast
(so it is not bit-for-bit deterministic run to run).
"""

from __future__ import annotations

import contextlib
import weakref

import torch

from common.attention.deformable_ms.module import KERNEL_DTYPES
from common.attention.dispatch import interpreting

# Launch config (module attributes so that `benchmarks.deformable_bench --sweep` can vary them): BLOCK_Q *
# BLOCK_D elements per program, the register budget of the D-vector tiles. Not yet timed on a GPU; chosen
# from ptxas for sm_90 at D=32, 4 warps: BLOCK_Q=32 takes 80 (fwd) / 96 (bwd) registers and no spills,
# i.e. 5-6 blocks per SM to hide the gathers' latency (BLOCK_Q=64 takes 147 / 188).
FWD_ELEMS, BWD_ELEMS = 1024, 1024
MAX_BLOCK_Q = 128
NUM_WARPS = 4


def _blocks(head_dim: int, elems: int) -> tuple[int, int]:
    """(BLOCK_Q, BLOCK_D): BLOCK_D the power of two covering D (masked), BLOCK_Q filling `elems`."""
    block_d = max(4, 1 << (head_dim - 1).bit_length())
    block_q = max(4, min(MAX_BLOCK_Q, elems // block_d))
    return block_q, block_d


def check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> None:
    """Raise ValueError with what is wrong when the tensors' shapes, dtypes or devices do not fit together
    (the level sizes are checked against value by `level_tensors`)."""
    if value.dim() != 4:
        raise ValueError(f"value must be [B, Nv, H, D], got {list(value.shape)}")
    batch, _, heads, _ = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(f"sampling_locations must be [B, Nq, H, L, P, 2], got {list(sampling_locations.shape)}")
    b, nq, h, levels, points, _ = sampling_locations.shape
    if (b, h) != (batch, heads):
        raise ValueError(
            f"sampling_locations {list(sampling_locations.shape)} do not match value [B={batch}, H={heads}]"
        )
    if tuple(attention_weights.shape) != (b, nq, h, levels, points):
        raise ValueError(
            f"attention_weights must be [B, Nq, H, L, P] = {[b, nq, h, levels, points]}, "
            f"got {list(attention_weights.shape)}"
        )
    if tuple(spatial_shapes.shape) != (levels, 2) or tuple(level_start_index.shape) != (levels,):
        raise ValueError(
            f"spatial_shapes must be [L={levels}, 2] and level_start_index [{levels}], got "
            f"{list(spatial_shapes.shape)} and {list(level_start_index.shape)}"
        )
    if spatial_shapes.is_floating_point() or level_start_index.is_floating_point():
        raise ValueError("spatial_shapes and level_start_index must be integer tensors")
    floats = {"value": value, "sampling_locations": sampling_locations, "attention_weights": attention_weights}
    for name, t in floats.items():
        if t.dtype not in KERNEL_DTYPES:
            raise ValueError(
                f"the Triton kernel takes {', '.join(map(str, KERNEL_DTYPES))} tensors, got {name} in {t.dtype} "
                "(use impl='torch')"
            )
    if any(t.device != value.device for t in floats.values()):
        devices = ", ".join(f"{n} on {t.device}" for n, t in floats.items())
        raise ValueError(f"value, sampling_locations and attention_weights must be on one device, got {devices}")
    if not (value.is_cuda or interpreting()):
        raise ValueError(f"the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1), got {value.device}")
    if value[:1].numel() >= 2**31:  # the kernels index within one batch element in int32
        raise ValueError(f"value has {value[:1].numel()} elements per batch element, the kernel takes < 2**31")


_LEVELS_CHECKED: dict[tuple, tuple] = {}  # (ids, Nv, device) -> (weakrefs, versions, int32 shapes, int32 starts)


def level_tensors(spatial_shapes, level_start_index, num_values, device) -> tuple[torch.Tensor, torch.Tensor]:
    """int32 copies of spatial_shapes and level_start_index on `device`, after checking on the host that the
    levels tile `value` exactly (the kernels trust them and would read out of bounds otherwise).

    The check needs a device-to-host copy (a sync); it is remembered for the same two tensor objects at the same
    in-place version, so a model that passes the same level tensors every step pays it once.
    """
    key = (id(spatial_shapes), id(level_start_index), num_values, str(device))
    try:
        versions = (spatial_shapes._version, level_start_index._version)
    except RuntimeError:  # inference tensors have no version counter: check every call
        versions = None
    hit = _LEVELS_CHECKED.get(key)
    if (
        hit is not None
        and versions is not None
        and hit[0]() is spatial_shapes
        and hit[1]() is level_start_index
        and hit[2] == versions
    ):
        return hit[3], hit[4]
    levels = spatial_shapes.shape[0]
    host = torch.cat([spatial_shapes.reshape(-1), level_start_index.reshape(-1)]).cpu().long()
    sizes = host[: 2 * levels].view(levels, 2)
    if (sizes <= 0).any():
        raise ValueError(f"spatial_shapes must be positive, got {sizes.tolist()}")
    tokens = sizes.prod(1)
    if int(tokens.sum()) != num_values:
        raise ValueError(
            f"value has Nv={num_values} tokens but spatial_shapes {sizes.tolist()} sum to {int(tokens.sum())}"
        )
    starts = torch.cat([tokens.new_zeros(1), tokens.cumsum(0)[:-1]])
    if not torch.equal(host[2 * levels :], starts):
        raise ValueError(
            f"level_start_index {host[2 * levels :].tolist()} is not the running sum of the level sizes "
            f"{starts.tolist()}"
        )
    shapes32 = sizes.to(device=device, dtype=torch.int32)
    starts32 = starts.to(device=device, dtype=torch.int32)
    if versions is not None:
        if len(_LEVELS_CHECKED) >= 64:
            _LEVELS_CHECKED.clear()
        _LEVELS_CHECKED[key] = (
            weakref.ref(spatial_shapes),
            weakref.ref(level_start_index),
            versions,
            shapes32,
            starts32,
        )
    return shapes32, starts32


def _device_of(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensors' one (a no-op on the CPU)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _launch_shape(value: torch.Tensor, sampling_locations: torch.Tensor):
    batch, num_values, heads, head_dim = value.shape
    num_queries, levels, points = sampling_locations.shape[1], sampling_locations.shape[3], sampling_locations.shape[4]
    return batch, num_values, heads, head_dim, num_queries, levels, points


@torch.library.custom_op("manyheads::deformable_ms_forward", mutates_args=())
def _forward(
    value: torch.Tensor, shapes: torch.Tensor, starts: torch.Tensor, locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    from common.attention.deformable_ms.kernels import msda_fwd_kernel

    batch, nv, heads, head_dim, nq, levels, points = _launch_shape(value, locations)
    out = value.new_empty(batch, nq, heads * head_dim)
    block_q, block_d = _blocks(head_dim, FWD_ELEMS)
    grid = (batch * -(-nq // block_q) * heads,)
    if out.numel():
        with _device_of(value):
            msda_fwd_kernel[grid](
                value, shapes, starts, locations, weights, out,
                nq, nv, heads, levels, points,
                D=head_dim, BLOCK_Q=block_q, BLOCK_D=block_d, num_warps=NUM_WARPS,
            )  # fmt: skip
    return out


@_forward.register_fake
def _(value, shapes, starts, locations, weights):
    batch, _, heads, head_dim = value.shape
    return value.new_empty(batch, locations.shape[1], heads * head_dim)


@torch.library.custom_op("manyheads::deformable_ms_backward", mutates_args=())
def _backward(
    grad_out: torch.Tensor,
    value: torch.Tensor,
    shapes: torch.Tensor,
    starts: torch.Tensor,
    locations: torch.Tensor,
    weights: torch.Tensor,
    need_value: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_value, or an empty tensor when `need_value` is False; grad_locations; grad_weights)."""
    from common.attention.deformable_ms.kernels import msda_bwd_kernel

    batch, nv, heads, head_dim, nq, levels, points = _launch_shape(value, locations)
    # fp32 accumulator for the scatter (atomics on bf16/fp16 lose the small contributions)
    grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device) if need_value else value
    grad_loc = torch.empty_like(locations)
    grad_weights = torch.empty_like(weights)
    block_q, block_d = _blocks(head_dim, BWD_ELEMS)
    grid = (batch * -(-nq // block_q) * heads,)
    if grad_out.numel():
        with _device_of(value):
            msda_bwd_kernel[grid](
                value, shapes, starts, locations, weights, grad_out,
                grad_value, grad_loc, grad_weights,
                nq, nv, heads, levels, points,
                D=head_dim, BLOCK_Q=block_q, BLOCK_D=block_d, GRAD_VALUE=need_value, num_warps=NUM_WARPS,
            )  # fmt: skip
    else:
        grad_loc.zero_()
        grad_weights.zero_()
    grad_value = grad_value.to(value.dtype) if need_value else value.new_empty(0)
    return grad_value, grad_loc, grad_weights


@_backward.register_fake
def _(grad_out, value, shapes, starts, locations, weights, need_value):
    grad_value = value.new_empty(value.shape) if need_value else value.new_empty(0)
    return grad_value, torch.empty_like(locations), torch.empty_like(weights)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _autograd_backward(ctx, grad_out):
    need_value = ctx.needs_input_grad[0]
    grad_value, grad_loc, grad_weights = _backward(grad_out.contiguous(), *ctx.saved_tensors, need_value)
    return (grad_value if need_value else None), None, None, grad_loc, grad_weights


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def deformable_ms_triton(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention core, Triton kernels; arguments, shapes and semantics as in
    `deformable_ms_torch` (value [B, Nv, H, D], spatial_shapes [L, 2] int, level_start_index [L],
    sampling_locations [B, Nq, H, L, P, 2] normalised (x, y), attention_weights [B, Nq, H, L, P];
    returns [B, Nq, H * D] in value's dtype). Float inputs bf16 / fp16 / fp32, not necessarily one dtype.
    Differentiable in value, locations and weights.

    The kernels are the custom ops `manyheads::deformable_ms_forward` / `_backward` (fake implementations and
    autograd registered), so torch.compile captures them in its graph. The check that the levels tile `value`
    reads tensor values, so it runs in eager mode only; a compiled graph trusts the level tensors.
    """
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if torch.compiler.is_compiling():
        shapes, starts = spatial_shapes.to(torch.int32), level_start_index.to(torch.int32)
    else:
        shapes, starts = level_tensors(spatial_shapes, level_start_index, value.shape[1], value.device)
    return _forward(value.contiguous(), shapes, starts, sampling_locations.contiguous(), attention_weights.contiguous())
