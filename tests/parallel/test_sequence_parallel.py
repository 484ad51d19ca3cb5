"""Ulysses sequence parallelism: exact equality with a single process for STDiT, STDiT2 and STDiT3."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist

from opensora_core.models.layers import RotaryEmbedding
from opensora_core.parallel.sequence import (
    apply_sequence_parallel,
    remove_sequence_parallel,
    rotate_with_offset,
    sequence_parallel_of,
)
from tests.parallel.dist_harness import run_world
from tests.parallel.tiny_models import build_tiny, tiny_batch


def test_rope_with_offset_equals_the_slice_of_a_full_rotation():
    rope = RotaryEmbedding(8)
    t = torch.randn(3, 2, 6, 12)  # head_dim 12 > rope dim 8: the rest passes through
    full = rope.rotate_queries_or_keys(t)
    for start, stop in ((0, 3), (3, 6), (2, 4)):
        torch.testing.assert_close(
            rotate_with_offset(rope, t[..., start:stop, :], start), full[..., start:stop, :]
        )


def test_without_a_group_the_model_is_untouched():
    model = build_tiny("stdit")
    assert apply_sequence_parallel(model, None) is model
    assert sequence_parallel_of(model) is None
    assert remove_sequence_parallel(model) is model


def test_other_models_are_refused_with_a_clear_error():
    from opensora_core.models import build_model

    dit = build_model("DiT-XL/2", depth=1, hidden_size=32, num_heads=2, input_size=(2, 8, 8))
    with pytest.raises(
        ValueError, match="supports STDiT-XL/2, STDiT2-XL/2, STDiT3-XL/2, STDiT3-3B/2 models.*sp_size=1"
    ):
        apply_sequence_parallel(dit, object())


# ------------------------------------------------------------------------------------- multi-process


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _equality_worker(env, kinds: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Each rank runs the SP model and a deep copy (single device) on the same inputs; returns max errors."""
    group = dist.new_group(list(range(env.world_size)))
    report: dict[str, dict[str, float]] = {}
    for kind in kinds:
        for checkpointing in (False, True):
            model = build_tiny(kind, grad_checkpointing=checkpointing).train()
            apply_sequence_parallel(model, group)
            assert sequence_parallel_of(model) is not None
            single = copy.deepcopy(model)  # a deep copy is a plain single-device model
            assert sequence_parallel_of(single) is None
            inputs = tiny_batch(kind)
            weight = torch.randn(2, 8, 4, 8, 8, generator=torch.Generator().manual_seed(3))
            out = model(**inputs)
            ref = single(**inputs)
            (out * weight).sum().backward()
            (ref * weight).sum().backward()
            grads, ref_grads = _grads(model), _grads(single)
            assert grads.keys() == ref_grads.keys()
            grad_err = 0.0
            for name, g in grads.items():
                dist.all_reduce(g, group=group)  # what the backend's world average does, times world
                g /= env.world_size
                scale = ref_grads[name].abs().max().clamp_min(1e-6)
                grad_err = max(grad_err, float((g - ref_grads[name]).abs().max() / scale))
            key = f"{kind}{'-ckpt' if checkpointing else ''}"
            report[key] = {"out": float((out - ref).detach().abs().max()), "grad": grad_err}

    # removing sequence parallelism gives the single-device model back
    remove_sequence_parallel(model)
    with torch.no_grad():
        report["removed"] = {"out": float((model(**inputs) - single(**inputs)).abs().max())}

    # frames must split evenly, heads must scatter evenly
    model = apply_sequence_parallel(build_tiny("stdit2"), group)
    odd = tiny_batch("stdit2", frames=3)
    try:
        model(**odd)
    except ValueError as e:
        report["odd_frames_error"] = {"ok": float("not divisible by sp_size=2" in str(e))}
    try:
        apply_sequence_parallel(build_tiny("stdit", num_heads=1), group)
    except ValueError as e:
        report["odd_heads_error"] = {"ok": float("num_heads=1" in str(e))}
    return report


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_two_rank_sequence_parallel_matches_single_process():
    reports = run_world(_equality_worker, 2, ("stdit", "stdit2", "stdit3"))
    for rank, report in enumerate(reports):
        for key in ("stdit", "stdit-ckpt", "stdit2", "stdit2-ckpt", "stdit3", "stdit3-ckpt"):
            assert report[key]["out"] < 1e-5, (rank, key, report[key])
            assert report[key]["grad"] < 1e-5, (rank, key, report[key])
        assert report["removed"]["out"] == 0.0
        assert report["odd_frames_error"]["ok"] == 1.0
        assert report["odd_heads_error"]["ok"] == 1.0


def _dp_sp_worker(env) -> dict[str, float]:
    from opensora_core.parallel.mesh import Mesh, build_mesh
    from tests.parallel.train_steps import max_relative_difference, train

    mesh = build_mesh(env, 2)  # dp 2 x sp 2
    single = Mesh(dp_size=1, dp_rank=0, dp_group=None, sp_size=1, sp_rank=0, sp_group=None)
    reference, _ = train("ddp", single, grad_clip=0.05)
    report = {}
    for plugin in ("fsdp2", "zero2-seq"):
        backend, _ = train(plugin, mesh, grad_clip=0.05)
        report[plugin] = max_relative_difference(backend.model_state_dict(), reference.model_state_dict())
    return report


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dp2_x_sp2_training_matches_single_process():
    for report in run_world(_dp_sp_worker, 4):
        assert report["fsdp2"] < 1e-4 and report["zero2-seq"] < 1e-4, report


def _masked_worker(env) -> dict[str, float]:
    """STDiT2 with frame masks (the reference-parity model and inputs, 4 of its 5 frames so they split over 2
    ranks): the SP model against a single-device copy; returns max |diff| of outputs and relative grads."""
    from tests.models.mask_parity import build_model, tensors, video_info

    group = dist.new_group(list(range(env.world_size)))
    io = tensors()
    x, t, y, text_mask = io["fwd.x"][:, :, :4], io["fwd.t"], io["fwd.y"], io["fwd.text_mask"]
    info = {**video_info("fwd"), "num_frames": torch.full((2,), 4.0)}
    report: dict[str, float] = {}
    for name in ("all_true_and_mixed", "head_false_and_mixed", "all_false_and_all_true"):
        x_mask = io[f"fwd.x_mask.{name}"][:, :4]
        model = build_model().train()
        single = copy.deepcopy(model)
        apply_sequence_parallel(model, group)
        out = model(x, t, y, text_mask, x_mask=x_mask, **info)
        ref = single(x, t, y, text_mask, x_mask=x_mask, **info)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
        (out * weight).sum().backward()
        (ref * weight).sum().backward()
        grad_err = 0.0
        for pname, g in _grads(model).items():
            dist.all_reduce(g, group=group)
            g /= env.world_size
            ref_g = dict(single.named_parameters())[pname].grad
            grad_err = max(grad_err, float((g - ref_g).abs().max() / ref_g.abs().max().clamp_min(1e-6)))
        report[f"{name}.out"] = float((out - ref).detach().abs().max())
        report[f"{name}.grad"] = grad_err
    return report


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_two_rank_sequence_parallel_masked_forward_matches_single_process():
    for rank, report in enumerate(run_world(_masked_worker, 2)):
        assert len(report) == 6
        for key, value in report.items():
            # outputs: 1e-5 absolute; gradients: relative to each parameter's largest gradient, where the
            # all-reduce's summation order adds float32 rounding (2e-5 to 3e-5 seen)
            assert value < (1e-5 if key.endswith(".out") else 1e-4), (rank, key, value)
