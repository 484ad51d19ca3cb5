"""In-process sampling with the tiny CPU config: seeds, caption cache, size info, images, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from opensora_core.config import load_config
from opensora_core.sample import SampleInputError, load_sampling_models, sample
from opensora_core.sample.pipeline import _prepare, _Runner, _steps_per_clip, resolve_checkpoint
from opensora_core.sample.writer import read_sample

TINY = "configs/debug/tiny_sample.py"


def _cfg(tmp_path, **overrides):
    base = {"save_dir": str(tmp_path / "out"), "scheduler.num_sampling_steps": 3}
    return load_config(TINY, overrides={**base, **overrides})


def _generated(tmp_path, prompts, batch_size, seed):
    """Float pixel videos ``[3, T, H, W]`` per (prompt, sample), before H.264 encoding, in plan order."""
    cfg = _cfg(tmp_path, batch_size=batch_size, seed=seed, num_sample=2)
    cfg, plan = _prepare(cfg, prompts)
    runner = _Runner(cfg, load_sampling_models(cfg, device="cpu"), plan, lambda _n: None)
    videos = []
    for start in range(0, len(plan.todo), batch_size):
        videos += list(runner.generate(plan.todo[start : start + batch_size]))
    return videos


def _rel(a, b):
    return ((a - b).norm() / a.norm()).item()


def test_same_seed_same_video_regardless_of_batch_size(tmp_path):
    prompts = ["a red ball", "a blue cube"]
    one = _generated(tmp_path / "bs1", prompts, batch_size=1, seed=7)
    three = _generated(tmp_path / "bs3", prompts, batch_size=3, seed=7)
    other = _generated(tmp_path / "seed8", prompts, batch_size=3, seed=8)
    assert len(one) == len(three) == len(other) == 4
    for a, b in zip(one, three, strict=True):
        # Same noise per sample; batched matmuls may only round differently (compared before H.264, whose block
        # decisions amplify a one-level pixel change).
        assert _rel(a, b) < 1e-4
    assert _rel(one[0], one[1]) > 0.1  # two samples of a prompt differ
    assert _rel(three[0], other[0]) > 0.1  # another seed, another video


def test_sample_writes_one_file_per_prompt_and_sample_in_order(tmp_path):
    cfg = _cfg(tmp_path, batch_size=3, seed=7, num_sample=2)
    paths = sample(cfg, ["a red ball", "a blue cube"], progress=False)
    assert [p.name for p in paths] == [f"sample_{i}-{k}.mp4" for i in range(2) for k in range(2)]
    frames = [read_sample(p) for p in paths]
    assert all(f.shape == frames[0].shape and f.ndim == 4 and f.shape[-1] == 3 for f in frames)


def test_identical_prompts_are_encoded_once(tmp_path):
    cfg = _cfg(tmp_path, batch_size=2, num_sample=2)
    models = load_sampling_models(cfg, device="cpu")
    seen: list[list[str]] = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def encode(self, texts):
            seen.append(list(texts))
            return self.inner.encode(texts)

        def null(self, n):
            return self.inner.null(n)

    models = models._replace(text_encoder=Spy(models.text_encoder))
    paths = sample(cfg, ["same words", "same words", "other"], progress=False, models=models)
    assert len(paths) == 6 and all(p.is_file() for p in paths)
    assert sorted(t for call in seen for t in call) == ["other", "same words"]
    grids = sorted(p.name for p in (tmp_path / "out" / "preview").iterdir())
    assert grids == ["sample_0.png", "sample_1.png", "sample_2.png"]


def test_single_frame_is_a_png(tmp_path):
    cfg = _cfg(tmp_path, num_frames=1)
    (path, _) = sample(cfg, progress=False)
    assert path.name == "sample_0.png" and read_sample(path).shape == (1, 32, 32, 3)


def test_previews_false_writes_no_grid(tmp_path):
    cfg = _cfg(tmp_path, num_frames=1)
    (path,) = sample(cfg, ["a red ball"], progress=False, previews=False)
    assert path.is_file() and not (tmp_path / "out" / "preview").exists()


def test_a_given_plan_is_not_planned_again(tmp_path, monkeypatch):
    from opensora_core.sample import pipeline, plan_run

    cfg = _cfg(tmp_path, num_frames=1, prompt=["a red ball"])
    plan = plan_run(cfg)
    with pytest.raises(ValueError, match="prompts or a plan"):
        sample(cfg, ["a blue cube"], progress=False, plan=plan)

    def fail(*_args, **_kwargs):
        raise AssertionError("plan_run called again")

    monkeypatch.setattr(pipeline, "plan_run", fail)
    assert sample(cfg, progress=False, plan=plan) == [tmp_path / "out" / "sample_0.png"]


def test_stdit2_gets_size_info_with_ar_width_over_height(tmp_path):
    stdit2 = {"_delete_": True, "type": "STDiT2-XL/2", "depth": 1, "hidden_size": 48, "num_heads": 4}
    cfg = _cfg(
        tmp_path,
        model={**stdit2, "patch_size": (1, 4, 4), "input_sq_size": 32},
        multi_resolution="STDiT2",
        image_size=(32, 48),
        fps=24,
        frame_interval=3,
    )
    models = load_sampling_models(cfg, device="cpu")
    calls = []
    models.model.register_forward_pre_hook(lambda _m, _a, kw: calls.append(kw), with_kwargs=True)
    (path, _) = sample(cfg, progress=False, models=models)
    info = calls[0]
    assert info["ar"].tolist() == [1.5] * 4  # 2 prompts, doubled for guidance
    assert info["height"][0] == 32 and info["width"][0] == 48
    assert info["num_frames"][0] == 8 and info["fps"][0] == 24
    assert read_sample(path).shape == (8, 32, 48, 3)


def test_stdit3_with_rflow_samples_one_batched_forward_per_step_with_size_info(tmp_path):
    stdit3 = {"_delete_": True, "type": "STDiT3-XL/2", "depth": 1, "hidden_size": 32, "num_heads": 2}
    # no timestep transform: as in the reference it maps every t to 0 for 1 < num_frames < 17 (here 8)
    rflow = {"_delete_": True, "type": "rflow", "num_sampling_steps": 3}
    cfg = _cfg(
        tmp_path,
        model={**stdit3, "patch_size": (1, 4, 4), "input_sq_size": 32},
        scheduler=rflow,
        multi_resolution="STDiT2",
        fps=24,
    )
    models = load_sampling_models(cfg, device="cpu")
    calls = []
    models.model.register_forward_pre_hook(lambda _m, a, kw: calls.append((a, kw)), with_kwargs=True)
    (path,) = sample(cfg, ["a red ball"], progress=False, models=models)
    assert len(calls) == 3  # one forward per Euler step, condition and null caption in one batch of 2
    assert _steps_per_clip(models.scheduler) == 3  # the progress bar counts steps, not rflow's time axis
    args, info = calls[0]
    assert args[0].shape[0] == 2 and info["fps"].tolist() == [24.0, 24.0]
    assert [a[1][0].item() for a, _ in calls] == pytest.approx([1000.0, 2000 / 3, 1000 / 3])
    assert info["height"][0] == 32 and info["num_frames"][0] == 8 and "ar" not in info
    assert read_sample(path).shape == (8, 32, 32, 3)


def test_checkpoint_folders_prefer_ema_and_the_latest_step(tmp_path):
    cfg = _cfg(tmp_path)
    model = load_sampling_models(cfg, device="cpu").model
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}
    for step, (m, e) in {2: (ema, state), 10: (state, ema)}.items():
        folder = tmp_path / "exp" / f"epoch0-global_step{step}"
        folder.mkdir(parents=True)
        save_file(m, str(folder / "model.safetensors"))
        save_file(e, str(folder / "ema.safetensors"))
    assert resolve_checkpoint(str(tmp_path / "exp")) == tmp_path / "exp/epoch0-global_step10/ema.safetensors"
    loaded = load_sampling_models(
        cfg.model_copy(
            update={"model": cfg.model.model_copy(update={"from_pretrained": str(tmp_path / "exp")})}
        ),
        device="cpu",
    ).model
    key = "blocks.0.attn.qkv.weight"
    assert torch.equal(loaded.state_dict()[key], ema[key])


def test_checkpoint_that_does_not_fit_names_the_config_values(tmp_path):
    model = load_sampling_models(_cfg(tmp_path), device="cpu").model
    path = tmp_path / "depth2.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    cfg = _cfg(tmp_path, **{"model.depth": 1, "model.from_pretrained": str(path)})
    with pytest.raises(SampleInputError) as err:
        load_sampling_models(cfg, device="cpu")
    msg = str(err.value)
    assert "depth2.safetensors" in msg and "model.depth=1" in msg and "blocks up to index 1" in msg
    cfg = _cfg(tmp_path, **{"model.hidden_size": 32, "model.from_pretrained": str(path)})
    with pytest.raises(SampleInputError, match="model.hidden_size=32"):
        load_sampling_models(cfg, device="cpu")


def test_dpm_solver_sampling(tmp_path):
    cfg = _cfg(tmp_path, scheduler={"_delete_": True, "type": "dpm-solver", "num_sampling_steps": 2})
    paths = sample(cfg, ["a red ball"], progress=False)
    assert read_sample(paths[0]).shape == (8, 32, 32, 3)


def test_long_video_with_a_latent_vae(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(tmp_path / "white.png")
    cfg = _cfg(
        tmp_path,
        vae={"_delete_": True, "type": "VideoAutoencoderKL", "from_pretrained": "debug/tiny-vae"},
        image_size=(64, 64),
        **{"model.patch_size": (1, 2, 2), "scheduler.num_sampling_steps": 2},
        loop=3,
        condition_frame_length=3,
        prompt=["|0|a|1|b"],
        reference_path=[str(tmp_path / "white.png")],
        mask_strategy=["0;2,0,0,-1"],
    )
    (path,) = sample(cfg, progress=False)
    assert read_sample(path).shape == (3 * (8 - 3) + 3, 64, 64, 3)


def test_prompt_as_path_resumes_missing_samples_only(tmp_path):
    cfg = _cfg(tmp_path, prompt_as_path=True, num_sample=2, **{"scheduler.num_sampling_steps": 2})
    first = sample(cfg, ["a red ball"], progress=False)
    assert [p.name for p in first] == ["a red ball-0.mp4", "a red ball-1.mp4"]
    kept = first[0].stat().st_mtime_ns
    first[1].unlink()
    again = sample(cfg, ["a red ball"], progress=False)
    assert again == first and first[1].is_file() and first[0].stat().st_mtime_ns == kept
    grid = read_sample(tmp_path / "out" / "preview" / "a red ball.png")
    assert grid.shape[1] == 2 * 32 + 2  # both samples, one regenerated and one read back
    assert sample(cfg, ["a red ball"], progress=False) == first  # nothing left to do


def test_class_conditioned_dit_samples_with_guidance(tmp_path):
    """DiT with condition="label_N": prompts are class ids, the null condition is the extra class."""
    cfg = load_config(
        "configs/dit/inference/1x256x256-class.py",
        overrides={
            "image_size": (32, 32),
            "save_dir": str(tmp_path / "out"),
            "scheduler.num_sampling_steps": 2,
            "model.depth": 1,
            "model.hidden_size": 32,
            "model.num_heads": 2,
            "model.from_pretrained": None,
            "vae.from_pretrained": "debug/tiny-vae",
            "dtype": "fp32",
        },
    )
    paths = sample(cfg, ["1", "207"], progress=False)
    assert [p.suffix for p in paths] == [".png", ".png"]
    assert [read_sample(p).shape for p in paths] == [(1, 32, 32, 3)] * 2  # [T, H, W, C]
    with pytest.raises(ValueError, match="class id"):
        sample(cfg, ["a cat"], progress=False)
