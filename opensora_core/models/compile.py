"""``torch.compile`` for the diffusion transformers: each transformer block is compiled in place.

Regional compilation: the blocks of a model share their structure, so dynamo traces one block and the others
reuse its code (28 blocks compile about as fast as one), and the model's own forward (embedders, caption
packing, ``.item()`` reads of video info) stays eager, outside the graphs. The block forwards have no graph
breaks (``tests/models/test_compile.py`` checks it with ``torch._dynamo.explain``).

Shapes: with ``dynamic=None`` (default) a block is first compiled for the shapes it sees; when a batch of
another bucket arrives, dynamo recompiles it once with the sizes that changed (batch, frames, tokens per
frame) symbolic, and later buckets reuse that graph. A size that changes only later costs one more graph, and
sizes 1 (batch of one, single-frame buckets) are specialised by dynamo and get their own graph: a few graphs
in the first epoch, none after (``benchmarks/model_step.py --recompiles`` counts them per epoch on the bucket
sampler). ``dynamic=True`` compiles symbolic from the start; ``False`` specialises on every shape.
"""

from __future__ import annotations

from torch import nn

__all__ = ["BLOCK_LISTS", "compile_blocks", "transformer_blocks"]

# attributes holding a model's transformer blocks (STDiT/STDiT2/DiT/Latte/PixArt; STDiT3)
BLOCK_LISTS: tuple[str, ...] = ("blocks", "spatial_blocks", "temporal_blocks")


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of ``model`` (the entries of its ``BLOCK_LISTS`` module lists), in order."""
    blocks = [
        block
        for name in BLOCK_LISTS
        if isinstance(getattr(model, name, None), nn.ModuleList)
        for block in getattr(model, name)
    ]
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no transformer blocks to compile (no module list named "
            f"{' / '.join(BLOCK_LISTS)}); pass the plain model, not a wrapper"
        )
    return blocks


def compile_blocks(
    model: nn.Module, backend: str = "inductor", dynamic: bool | None = None, mode: str | None = None
) -> int:
    """``torch.compile`` every transformer block of ``model`` in place (``nn.Module.compile``); returns how
    many. The state-dict keys do not change. backend/dynamic/mode are ``torch.compile``'s."""
    blocks = transformer_blocks(model)
    for block in blocks:
        block.compile(backend=backend, dynamic=dynamic, mode=mode)
    return len(blocks)
