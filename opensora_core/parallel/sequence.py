"""Ulysses-style sequence parallelism for STDiT, STDiT2 and STDiT3, applied to a single-device model from outside.

Which families qualify is ``ModelCaps.sequence_parallel`` in ``opensora_core.models.registry.MODELS``; a family
that sets it has temporal self-attention modules (STDiT/STDiT2: ``blocks[i].attn_temp``, STDiT3:
``temporal_blocks[i].attn``) that are split as below.

``apply_sequence_parallel(model, sp_group)`` makes the ``sp`` ranks of ``sp_group`` share one sample's token
sequence. The split is along **frames**: rank ``r`` keeps the ``T / sp`` consecutive temporal patches
``[r * T/sp, (r + 1) * T/sp)`` (``T`` must be divisible by ``sp``), so everything that works inside one frame
(spatial self-attention, cross-attention, MLP, adaLN modulation, the final layer) runs locally and computes
exactly what a single process computes. Only temporal attention needs the other frames; it uses two
all-to-alls (Ulysses)::

    q, k, v [B*S, H, T/sp, D] --all_to_all(scatter heads, gather frames)--> [B*S, H/sp, T, D]
    attention over all T frames for H/sp heads
    out [B*S, H/sp, T, D]     --all_to_all(scatter frames, gather heads)--> [B*S, H, T/sp, D]

Position-dependent terms use global frame positions: STDiT's temporal sin-cos table is chunked per rank, the
temporal RoPE of STDiT2 / STDiT3 rotates local frame ``i`` as global frame ``r * T/sp + i`` (RoPE and the RMS
qk-norm act per token, so applying them before the all-to-all is exact), and ``x_mask`` is chunked by frames. The model's
output is all-gathered along frames, so every rank of the group holds the full prediction and computes the
same full loss; the gather's backward keeps this rank's slice of the gradient and multiplies it by ``sp``.
Each parameter gradient of one rank is then ``sp`` times its own frames' share, and the world-average
all-reduce of any data-parallel backend (over ``dp x sp`` ranks) yields exactly the gradient of a run without
sequence parallelism on the same global batch.

This differs from Open-Sora 1.0, whose sequence-parallel spatial attention attends over same-index frames of
all ranks (not per frame), from Open-Sora 1.1, which has none for STDiT2, and from Open-Sora 1.2, whose STDiT3
splits the spatial tokens of each frame.

Ranks of one group must feed identical inputs (batch, noise, timesteps, caption-dropout draws). The group is
stored on a :class:`SequenceParallel` handle that ``copy.deepcopy`` turns into ``None``: a deep copy of the
model (an EMA copy, say) is an ordinary single-device model computing the same function.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "SequenceParallel",
    "all_to_all",
    "apply_sequence_parallel",
    "gather_frames",
    "remove_sequence_parallel",
    "rotate_with_offset",
    "sequence_parallel_of",
]


# ----------------------------------------------------------------------------------------------------------
# collectives with autograd
# ----------------------------------------------------------------------------------------------------------


def _all_to_all_raw(x: torch.Tensor, group: Any, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    """Chunk ``x`` along scatter_dim, send chunk j to rank j, concatenate what arrives along gather_dim."""
    world = dist.get_world_size(group)
    scatter_dim, gather_dim = scatter_dim % x.ndim, gather_dim % x.ndim
    # one contiguous buffer with the destination rank first: a single all_to_all_single (about twice as fast
    # as the list form on gloo)
    send = x.unflatten(scatter_dim, (world, -1)).movedim(scatter_dim, 0).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    # recv[i] came from rank i: put the source-rank axis in front of gather_dim and merge (rank order)
    return recv.movedim(0, gather_dim).flatten(gather_dim, gather_dim + 1)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any, scatter_dim: int, gather_dim: int) -> torch.Tensor:
        ctx.group, ctx.scatter_dim, ctx.gather_dim = group, scatter_dim, gather_dim
        return _all_to_all_raw(x, group, scatter_dim, gather_dim)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        # the transpose of an all-to-all is the all-to-all with the two dimensions swapped
        return _all_to_all_raw(grad, ctx.group, ctx.gather_dim, ctx.scatter_dim), None, None, None


def all_to_all(x: torch.Tensor, group: Any, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    """Differentiable all-to-all over ``group``: ``x.size(scatter_dim)`` must be divisible by the group size.

    Rank ``i`` sends its ``j``-th chunk along ``scatter_dim`` to rank ``j``; the received chunks are concatenated
    along ``gather_dim`` in rank order.
    """
    world = dist.get_world_size(group)
    if x.shape[scatter_dim] % world:
        raise ValueError(
            f"all_to_all: dimension {scatter_dim} of size {x.shape[scatter_dim]} is not divisible by the "
            f"sequence-parallel size {world}"
        )
    return _AllToAll.apply(x, group, scatter_dim, gather_dim)


class _GatherFrames(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any, dim: int) -> torch.Tensor:
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        ctx.group, ctx.dim, ctx.world, ctx.rank, ctx.local = group, dim, world, rank, x.shape[dim]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        # Every rank holds the same full loss, hence the same full gradient: keep the own slice and scale by
        # the group size, so the backend's world-average all-reduce gives the single-process gradient.
        local = grad.narrow(ctx.dim, ctx.rank * ctx.local, ctx.local)
        return local * ctx.world, None, None


def gather_frames(x: torch.Tensor, group: Any, dim: int = 1) -> torch.Tensor:
    """All-gather ``x`` along ``dim`` in rank order; backward keeps this rank's slice times the group size."""
    return _GatherFrames.apply(x, group, dim)


# ----------------------------------------------------------------------------------------------------------
# the handle the models call
# ----------------------------------------------------------------------------------------------------------


class SequenceParallel:
    """This rank's place in a sequence-parallel group; the models call its frame helpers when attached.

    ``split_frames`` / ``chunk_frames`` select this rank's frames, ``gather_frames`` reassembles the output,
    ``all_to_all`` is the differentiable collective used by temporal attention.
    """

    def __init__(self, group: Any) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "sequence parallelism needs an initialised process group: call "
                "opensora_core.parallel.init_distributed() and build_mesh() first"
            )
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def __repr__(self) -> str:
        return f"SequenceParallel(rank={self.rank}, size={self.size})"

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        # a deep copy of a sequence-parallel model is a plain single-device model (same function)
        return None

    def local_frames(self, num_frames: int) -> tuple[int, int]:
        """``(start, stop)`` of this rank's temporal patches out of ``num_frames``."""
        if num_frames % self.size:
            raise ValueError(
                f"sequence parallelism splits frames: the {num_frames} temporal patches are not divisible by "
                f"sp_size={self.size}; use a number of latent frames (divided by the temporal patch size) "
                f"that is a multiple of {self.size}, or a smaller sp_size"
            )
        n = num_frames // self.size
        return self.rank * n, (self.rank + 1) * n

    def split_frames(self, x: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, int]:
        """x [B, T*S, C] -> (this rank's [B, T/sp*S, C], T/sp)."""
        start, stop = self.local_frames(num_frames)
        b, n, c = x.shape
        x = x.view(b, num_frames, n // num_frames, c)[:, start:stop]
        return x.reshape(b, -1, c), stop - start

    def chunk_frames(self, t: torch.Tensor | None, dim: int = 1) -> torch.Tensor | None:
        """This rank's slice along the frame axis ``dim`` (x_mask [B, T], temporal tables [1, T, C])."""
        if t is None:
            return None
        start, stop = self.local_frames(t.shape[dim])
        return t.narrow(dim, start, stop - start)

    def gather_frames(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T/sp*S, K] of every rank -> [B, T*S, K] (frame-major token order kept)."""
        return gather_frames(x, self.group, dim=1)

    def all_to_all(self, x: torch.Tensor, scatter_dim: int, gather_dim: int) -> torch.Tensor:
        """Differentiable all-to-all over this group (see :func:`all_to_all`)."""
        return all_to_all(x, self.group, scatter_dim, gather_dim)


# ----------------------------------------------------------------------------------------------------------
# temporal-attention hooks
# ----------------------------------------------------------------------------------------------------------


def _ulysses_attend(
    attn: nn.Module, sp: SequenceParallel | None, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Temporal attention core under SP: q, k, v [B', H, T/sp, D] -> [B', H, T/sp, D] over all T frames."""
    core = type(attn)._attend
    if sp is None:
        return core(attn, q, k, v)
    qkv = torch.stack((q, k, v))  # [3, B', H, T/sp, D]
    qkv = sp.all_to_all(qkv, scatter_dim=2, gather_dim=3)  # [3, B', H/sp, T, D]
    out = core(attn, qkv[0], qkv[1], qkv[2])  # [B', H/sp, T, D]
    return sp.all_to_all(out, scatter_dim=2, gather_dim=1)  # [B', H, T/sp, D]


def rotate_with_offset(rope: nn.Module, t: torch.Tensor, offset: int) -> torch.Tensor:
    """Rotate t [..., N, D] with ``rope`` (a RotaryEmbedding) at positions ``offset .. offset + N - 1``.

    Same arithmetic as ``RotaryEmbedding.rotate_queries_or_keys`` (interleaved pairs, only the first
    ``rope.dim`` channels rotate), so the frames of one rank get exactly the rotation of a full-sequence call.
    """
    n = t.shape[-2]
    ang = rope.angles(offset + n, t.device)[offset:]  # [N, dim]
    rot, rest = t[..., : rope.dim], t[..., rope.dim :]
    pairs = rot.reshape(*rot.shape[:-1], -1, 2)
    rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).reshape(rot.shape)
    out = rot * ang.cos() + rotated_half * ang.sin()
    if rest.shape[-1]:
        out = torch.cat((out, rest), dim=-1)
    return out.to(t.dtype)


def _rope_at_global_frames(rope: nn.Module, sp: SequenceParallel | None, t: torch.Tensor) -> torch.Tensor:
    """The temporal RoPE of this rank's frames t [B', H, T/sp, D] at their global positions."""
    offset = 0 if sp is None else sp.rank * t.shape[-2]
    return rotate_with_offset(rope, t, offset)


# ----------------------------------------------------------------------------------------------------------
# apply / remove
# ----------------------------------------------------------------------------------------------------------


def _supported_model(model: nn.Module) -> str:
    """The MODELS name of ``model`` when its family can run sequence-parallel (``ModelCaps.sequence_parallel``)."""
    from opensora_core.models.registry import MODELS, family_of

    family = family_of(model)
    if family is not None and family[1].caps.sequence_parallel:
        return family[0]
    wrapped = getattr(model, "module", None)
    hint = (
        " (it wraps a model: apply sequence parallelism to the plain model before build_backend)"
        if isinstance(wrapped, nn.Module)
        else ""
    )
    supported = [name for name, entry in MODELS.items() if entry.caps.sequence_parallel]
    raise ValueError(
        f"sequence parallelism supports {', '.join(supported)} models, got {type(model).__name__}{hint}; "
        "set sp_size=1 (plugin zero2/ddp/fsdp2) for other models"
    )


def _temporal_attentions(model: nn.Module) -> list[nn.Module]:
    """The self-attention modules that attend over frames: STDiT3's ``temporal_blocks[i].attn``, else
    (STDiT / STDiT2) ``blocks[i].attn_temp``."""
    temporal_blocks = getattr(model, "temporal_blocks", None)
    if temporal_blocks is not None:
        return [block.attn for block in temporal_blocks]
    return [block.attn_temp for block in model.blocks]


def sequence_parallel_of(model: nn.Module) -> SequenceParallel | None:
    """The handle attached by :func:`apply_sequence_parallel`, or None for a single-device model."""
    return getattr(model, "sequence_parallel", None)


def apply_sequence_parallel(model: nn.Module, sp_group: Any) -> nn.Module:
    """Make ``model`` (STDiT, STDiT2 or STDiT3) run sequence-parallel over ``sp_group``; returns the same model.

    ``sp_group`` is ``Mesh.sp_group``: ``None`` or a group of size 1 leaves the model untouched. Must be called
    on the plain model before the training backend wraps it. ``num_heads`` must be divisible by the group size
    (heads are scattered in temporal attention); at forward time the number of temporal patches must be too.
    """
    if sp_group is None:
        return model
    kind = _supported_model(model)
    sp = SequenceParallel(sp_group)
    if sp.size == 1:
        return model
    if model.num_heads % sp.size:
        raise ValueError(
            f"{kind} has num_heads={model.num_heads}, not divisible by sp_size={sp.size}: Ulysses sequence "
            f"parallelism scatters attention heads; choose an sp_size that divides {model.num_heads}"
        )
    if sequence_parallel_of(model) is not None:
        raise ValueError("apply_sequence_parallel: the model is already sequence-parallel")
    for attn in _temporal_attentions(model):
        attn._attend = functools.partial(_ulysses_attend, attn, sp)
        if attn.rope is not None:
            attn.rope = functools.partial(_rope_at_global_frames, model.rope, sp)
    model.sequence_parallel = sp
    return model


def remove_sequence_parallel(model: nn.Module) -> nn.Module:
    """Undo :func:`apply_sequence_parallel` (the model becomes single-device again); returns the model."""
    if sequence_parallel_of(model) is None:
        return model
    for attn in _temporal_attentions(model):
        attn.__dict__.pop("_attend", None)
        if isinstance(attn.rope, functools.partial):
            attn.rope = model.rope.rotate_queries_or_keys
    model.sequence_parallel = None
    return model
