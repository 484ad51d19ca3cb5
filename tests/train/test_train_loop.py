"""In-process training runs of the tiny STDiT (single process): checkpoints, resume, masks, NaN handling, export."""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path

import pytest
import torch

from opensora_core.config import load_config
from opensora_core.models import build_model
from opensora_core.testing.faults import NAN_STEPS_ENV, PAUSE_AFTER_STEP_ENV, Faults
from opensora_core.train import checkpoint as ckpt
from opensora_core.train import train
from opensora_core.train.components import model_build_kwargs
from opensora_core.train.export import export_checkpoint
from opensora_core.train.loop import TrainingAborted
from opensora_core.train.reporting import parse_log_line
from tests.train.conftest import TINY_OVERRIDES, TINY_TRAIN


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_safetensors(path)


def _assert_bitwise(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"tensors differ: {diff[:5]}"


def _build_tiny_model(cfg) -> torch.nn.Module:
    from opensora_core.models.text_encoders import build_text_encoder
    from opensora_core.models.vae import build_vae

    vae = build_vae(cfg.vae.as_dict())
    te = build_text_encoder(cfg.text_encoder.as_dict())
    return build_model(cfg.model.type, **model_build_kwargs(cfg, vae, te))


@pytest.fixture(scope="module")
def trained(tiny_dataset: str, tmp_path_factory: pytest.TempPathFactory):
    """One 4-step run with checkpoints at steps 2 and 4: (cfg, result)."""
    out = tmp_path_factory.mktemp("trained")
    cfg = load_config(
        TINY_TRAIN,
        overrides={
            **TINY_OVERRIDES,
            "dataset.data_path": tiny_dataset,
            "outputs": str(out),
            "ckpt_every": 2,
        },
    )
    return cfg, train(cfg)


def test_run_writes_the_checkpoint_layout(trained):
    cfg, result = trained
    assert result.global_step == 4
    assert Path(result.experiment_dir).name == "000-STDiT-XL-2"
    folder = Path(result.checkpoint_dir)
    assert folder.name == "epoch0-global_step4"
    names = {p.name for p in folder.iterdir()}
    assert {
        "model.safetensors",
        "ema.safetensors",
        "optimizer.pt",
        "sampler.json",
        "running_states.json",
        "config.py",
        "config.json",
        "_COMPLETE",
        "rng",
    } <= names
    assert (folder / "rng" / "rank00000.pt").is_file()
    running = json.loads((folder / "running_states.json").read_text())
    assert running["global_step"] == 4 and running["step"] == 4 and running["epoch"] == 0
    assert running["sample_start_index"] == 8 and running["world_size"] == 1
    assert "mlflow_run_id" in running
    assert load_config(folder / "config.py").model_dump() == cfg.model_dump()
    assert [r.global_step for r in ckpt.list_checkpoints(result.experiment_dir)] == [2, 4]
    assert {"loss", "grad_norm", "lr", "samples_per_s", "tokens_per_s", "step_time_s", "mfu"} <= set(
        result.final_metrics
    )


def test_checkpoint_weights_load_with_build_model(trained):
    cfg, result = trained
    folder = Path(result.checkpoint_dir)
    model = _build_tiny_model(cfg)
    model.load_state_dict(_tensors(folder / "model.safetensors"), strict=True)
    ema_model = _build_tiny_model(cfg)
    ema_model.load_state_dict(_tensors(folder / "ema.safetensors"), strict=True)
    # the folder itself is a valid --ckpt-path / from_pretrained (model.safetensors inside)
    from opensora_core.models.checkpoint import load_checkpoint

    again = _build_tiny_model(cfg)
    missing, unexpected = load_checkpoint(again, folder, strict=True)
    assert not missing and not unexpected
    _assert_bitwise(again.state_dict(), model.state_dict())
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), ema_model.parameters(), strict=True))


def test_export_writes_the_official_plain_state_dict(trained, tmp_path: Path):
    cfg, result = trained
    out = export_checkpoint(result.checkpoint_dir, str(tmp_path / "model.pth"))
    state = torch.load(out, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    model = _build_tiny_model(cfg)
    assert set(state) == set(model.state_dict())  # official keys, buffers included
    model.load_state_dict(state, strict=True)
    ema = torch.load(
        export_checkpoint(result.checkpoint_dir, str(tmp_path / "ema.pth"), ema=True, dtype="bf16"),
        weights_only=True,
    )
    assert ema["x_embedder.proj.weight"].dtype == torch.bfloat16
    _assert_bitwise(
        {k: v.float() for k, v in ema.items() if v.is_floating_point()},
        {
            k: v.to(torch.bfloat16).float()
            for k, v in _tensors(Path(result.checkpoint_dir) / "ema.safetensors").items()
            if v.is_floating_point()
        },
    )
    from opensora_core.train.export import main

    assert main([str(tmp_path / "nowhere"), str(tmp_path / "x.pth")]) == 1


def test_single_process_resume_is_bitwise_equal(trained, tiny_config):
    _, full = trained
    first = train(tiny_config(max_steps=2, ckpt_every=2))
    assert first.global_step == 2
    resumed = train(tiny_config(max_steps=4, ckpt_every=2, load="latest"))
    assert resumed.global_step == 4
    assert Path(resumed.experiment_dir) == Path(first.experiment_dir)  # same experiment continued
    for name in ("model.safetensors", "ema.safetensors"):
        _assert_bitwise(
            _tensors(Path(resumed.checkpoint_dir) / name), _tensors(Path(full.checkpoint_dir) / name)
        )


def test_start_from_scratch_keeps_weights_and_optimizer_resets_counters(trained, tiny_config):
    _, full = trained
    result = train(tiny_config(max_steps=2, load=full.checkpoint_dir, start_from_scratch=True))
    assert result.global_step == 2
    assert Path(result.experiment_dir) != Path(full.experiment_dir)
    running = json.loads((Path(result.checkpoint_dir) / "running_states.json").read_text())
    assert (running["epoch"], running["step"], running["global_step"]) == (0, 2, 2)
    opt = torch.load(Path(result.checkpoint_dir) / "optimizer.pt", weights_only=True)
    steps = {float(s["step"]) for s in opt["optimizer"]["state"].values()}
    assert steps == {6.0}  # 4 loaded optimizer steps + 2 new ones


def test_faults_from_env():
    faults = Faults.from_env({NAN_STEPS_ENV: " 2, 3,", PAUSE_AFTER_STEP_ENV: "5"})
    assert faults == Faults(frozenset({2, 3}), 5)
    assert Faults.from_env({}) == Faults()
    assert math.isnan(faults.poison_loss(1.0, step=2, rank=0))
    assert faults.poison_loss(1.0, step=2, rank=1) == 1.0  # rank 0 only
    assert faults.poison_loss(1.0, step=4, rank=0) == 1.0
    faults.pause_if_due(4)  # not the pause step: returns at once
    with pytest.raises(ValueError, match=NAN_STEPS_ENV):
        Faults.from_env({NAN_STEPS_ENV: "two"})
    with pytest.raises(ValueError, match=PAUSE_AFTER_STEP_ENV):
        Faults.from_env({PAUSE_AFTER_STEP_ENV: "x"})


def test_nan_steps_are_skipped_and_counted(tiny_config, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENSORA_DEBUG_NAN_STEPS", "2,3")
    result = train(tiny_config(max_steps=5, max_bad_steps=3))
    running = json.loads((Path(result.checkpoint_dir) / "running_states.json").read_text())
    assert running["bad_steps_total"] == 2 and running["global_step"] == 5
    opt = torch.load(Path(result.checkpoint_dir) / "optimizer.pt", weights_only=True)
    assert {float(s["step"]) for s in opt["optimizer"]["state"].values()} == {3.0}  # 5 steps - 2 skipped


def test_abort_after_max_bad_steps_saves_then_raises(tiny_config, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENSORA_DEBUG_NAN_STEPS", "2,3,4")
    weights_after_step1 = {}
    ok = train(tiny_config(max_steps=1))
    weights_after_step1 = _tensors(Path(ok.checkpoint_dir) / "model.safetensors")
    with pytest.raises(TrainingAborted, match="2 consecutive steps") as info:
        train(tiny_config(max_steps=10, max_bad_steps=2))
    folder = Path(info.value.checkpoint_dir)
    assert folder.name == "epoch0-global_step3" and (folder / "_COMPLETE").is_file()
    _assert_bitwise(_tensors(folder / "model.safetensors"), weights_after_step1)


def test_cli_exit_code_on_abort(tiny_config, tiny_dataset, tmp_path, monkeypatch: pytest.MonkeyPatch):
    from opensora_core.train.__main__ import main

    monkeypatch.setenv("OPENSORA_DEBUG_NAN_STEPS", "1")
    overrides = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in TINY_OVERRIDES.items()]
    argv = [
        str(TINY_TRAIN),
        "--outputs",
        str(tmp_path / "cli"),
        "--data-path",
        tiny_dataset,
        "--no-ema",
        "--cfg-options",
        *overrides,
        "max_bad_steps=1",
    ]
    try:
        assert main(argv) == 3
        assert main([str(TINY_TRAIN), "--cfg-options", "model.depht=2"]) == 2
    finally:
        logging.getLogger().setLevel(logging.WARNING)
    ckpts = list((tmp_path / "cli").glob("*/epoch*"))
    assert len(ckpts) == 1 and not (ckpts[0] / "ema.safetensors").exists()  # --no-ema


def test_masks_reach_losses_and_model_and_captions_drop(tiny_config, monkeypatch: pytest.MonkeyPatch):
    from opensora_core.models.layers import CaptionEmbedder
    from opensora_core.schedulers.iddpm import IDDPM

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = IDDPM.training_losses

    def spy(self, model, x_start, t, model_kwargs=None, noise=None, mask=None, **kw):
        seen.append((mask, model_kwargs.get("x_mask")))
        return original(self, model, x_start, t, model_kwargs=model_kwargs, noise=noise, mask=mask, **kw)

    drops: list[int] = []
    original_drop = CaptionEmbedder.token_drop

    def drop_spy(self, caption, force_drop_ids=None):
        drops.append(caption.shape[0])
        return original_drop(self, caption, force_drop_ids)

    monkeypatch.setattr(IDDPM, "training_losses", spy)
    monkeypatch.setattr(CaptionEmbedder, "token_drop", drop_spy)
    cfg = tiny_config(max_steps=3, mask_ratios={"mask_no": 0.0, "mask_quarter_head": 1.0})
    result = train(cfg)
    assert len(seen) == 3
    for mask, x_mask in seen:
        assert mask is x_mask and mask.dtype == torch.bool and mask.shape == (2, 8)
        assert not mask[:, 0].any() and mask[:, -1].all()  # head frames are conditioning frames
    assert drops and sum(drops) == 3 * 2  # caption dropout drawn in train mode on CPU
    assert result.global_step == 3


def test_warmup_lr_in_logs_and_loss_falls(tiny_config, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="opensora_core.train.loop"):
        train(tiny_config(max_steps=20, warmup_steps=4, lr=3e-3, ckpt_every=0))
    lines = [parse_log_line(r.getMessage()) for r in caplog.records if r.getMessage().startswith("step=")]
    lrs = [float(line["lr"]) for line in lines[:5]]
    assert lrs == pytest.approx([7.5e-4, 1.5e-3, 2.25e-3, 3e-3, 3e-3])
    losses = [float(line["loss"]) for line in lines]
    assert statistics.mean(losses[-6:]) < statistics.mean(losses[:6])
    assert all(key in lines[-1] for key in ("samples/s", "tokens/s", "step_time", "mfu", "eta"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"dtype": "bf16"},
        {"scheduler": {"type": "iddpm-speed", "timestep_respacing": ""}},
        {"plugin": "zero2", "keep_last_n": 1, "ckpt_every": 1},
    ],
    ids=["bf16", "iddpm-speed", "zero2-retention"],
)
def test_training_variants_run(tiny_config, overrides):
    result = train(tiny_config(max_steps=2, **overrides))
    assert result.global_step == 2
    assert result.final_metrics["loss"] == pytest.approx(result.final_metrics["loss"])  # finite
    if "keep_last_n" in overrides:
        assert [r.global_step for r in ckpt.list_checkpoints(result.experiment_dir)] == [2]


def test_gradient_checkpointing_gives_the_same_weights(tiny_config):
    plain = train(tiny_config(max_steps=2))
    checkpointed = train(tiny_config(max_steps=2, grad_checkpoint=True))
    a = _tensors(Path(plain.checkpoint_dir) / "model.safetensors")
    b = _tensors(Path(checkpointed.checkpoint_dir) / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_load_latest_without_checkpoints_starts_a_new_run(tiny_config):
    result = train(tiny_config(max_steps=1, load="latest"))
    assert result.global_step == 1 and Path(result.experiment_dir).name == "000-STDiT-XL-2"
    again = train(tiny_config(max_steps=2, load="latest"))
    assert again.global_step == 2 and again.experiment_dir == result.experiment_dir


def test_stdit3_trains_with_rflow(tiny_config):
    """Open-Sora 1.2's pair: rflow draws its own t (logit-normal + transform) and noise from the step generator;
    the run is reproducible and the loss is finite (issue 16)."""
    overrides = {
        "model": {
            "_delete_": True,
            "type": "STDiT3-XL/2",
            "depth": 1,
            "hidden_size": 64,
            "num_heads": 4,
            "patch_size": (1, 4, 4),
        },
        "scheduler": {"_delete_": True, "type": "rflow", "sample_method": "logit-normal"},
    }
    first = train(tiny_config(max_steps=2, **overrides))
    again = train(tiny_config(max_steps=2, **overrides))
    assert first.global_step == again.global_step == 2
    assert math.isfinite(first.final_metrics["loss"])
    a = _tensors(Path(first.checkpoint_dir) / "model.safetensors")
    b = _tensors(Path(again.checkpoint_dir) / "model.safetensors")
    assert any(k.startswith("temporal_blocks.") for k in a)
    _assert_bitwise(a, b)


def test_v12_adam_eps_and_mask_kinds_reach_the_optimizer_and_model(
    tiny_config, monkeypatch: pytest.MonkeyPatch
):
    """Open-Sora 1.2 keys do what the reference does: adam_eps is the optimizer's eps, and 1.2's mask kinds
    (here only `intepolate`, the rest implicitly mask_no) shape the masks the model gets (issue 16)."""
    from opensora_core.train import loop as loop_module

    backends = []
    original = loop_module.build_backend

    def spy(*args, **kwargs):
        backends.append(original(*args, **kwargs))
        return backends[-1]

    masks: list[torch.Tensor] = []
    from opensora_core.schedulers.iddpm import IDDPM

    original_tl = IDDPM.training_losses

    def tl_spy(self, model, x_start, t, model_kwargs=None, noise=None, mask=None, **kw):
        masks.append(mask)
        return original_tl(self, model, x_start, t, model_kwargs=model_kwargs, noise=noise, mask=mask, **kw)

    monkeypatch.setattr(loop_module, "build_backend", spy)
    monkeypatch.setattr(IDDPM, "training_losses", tl_spy)
    train(tiny_config(max_steps=2, adam_eps=1e-15, mask_ratios={"intepolate": 1.0}))
    assert len(masks) == 2
    assert backends[0].optimizer.param_groups[0]["eps"] == 1e-15
    for mask in masks:  # every other latent frame conditions, phase 0 or 1 per sample
        for row in mask.tolist():
            assert row[0::2] != row[1::2] and len(set(row[0::2])) == 1 and len(set(row[1::2])) == 1
