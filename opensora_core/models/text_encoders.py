"""Frozen text encoders that turn prompts into the conditioning ``y`` of the diffusion models.

Three kinds, chosen by ``type`` in the ``text_encoder`` config (Open-Sora spelling):

- ``"t5"``: T5 encoder (``DeepFloyd/t5-v1_1-xxl`` in Open-Sora, d_model 4096). ``encode(prompts)`` returns
  ``y = last_hidden_state[:, None]`` ``[B, 1, L, D]`` and the attention ``mask`` ``[B, L]`` with
  ``L = model_max_length`` (padding to max length, truncation, EOS appended).
- ``"clip"``: CLIP text model; ``y`` is the pooled output ``[B, 1, 1, hidden]`` (max length 77).
- ``"classes"``: prompts are class ids written as strings; ``y`` is a LongTensor ``[B]``; null = ``num_classes``.

The null caption for classifier-free guidance is the diffusion model's learned ``y_embedder.y_embedding``:
call :meth:`T5TextEncoder.set_null_from_model` once (or pass ``model=`` to ``null``).

``from_pretrained`` accepts a hub id, a local folder, or a debug id (``debug/tiny-t5``, ``debug/tiny-clip``) that
builds a tiny deterministic model in code. Missing models raise one
:class:`~opensora_core.models.pretrained.ModelNotFoundError` saying how to fetch them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from opensora_core.models.pretrained import (
    call_hub,
    hub_kwargs,
    is_debug_id,
    looks_like_local_path,
    parse_typed_config,
    resolve_local_folder,
)
from opensora_core.models.t5_tokenizer import t5_tokenizer_from_sentencepiece
from opensora_core.models.text_encoder_registry import TEXT_ENCODERS, ClassesConfig, ClipConfig, T5Config

TextEncoderConfig = T5Config | ClipConfig | ClassesConfig

# Files a tokenizer may need; fetched (small) when from_pretrained is a hub id.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "vocab.json",
    "merges.txt",
)


# ------------------------------------------------------------------------------------------------ loading
def _tokenizer_folder(
    name: str, cache_dir: str | None, local_files_only: bool, subfolder: str | None, what: str
) -> Path:
    """Local folder holding the tokenizer files of ``name`` (downloading the small files for hub ids)."""
    if looks_like_local_path(name):
        return resolve_local_folder(name, subfolder, what, legacy_children=("t5-v1_1-xxl",))
    from huggingface_hub import snapshot_download

    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    kwargs = hub_kwargs(cache_dir, local_files_only, None)
    snapshot = call_hub(
        snapshot_download,
        name,
        what,
        subfolder,
        allow_patterns=[prefix + f for f in _TOKENIZER_FILES],
        **kwargs,
    )
    return Path(snapshot) / prefix if prefix else Path(snapshot)


def load_tokenizer(
    name: str,
    what: str,
    cache_dir: str | None = None,
    local_files_only: bool = False,
    subfolder: str | None = None,
):
    """Load a tokenizer from a hub id or local folder; ``spiece.model``-only folders go through sentencepiece."""
    from transformers import AutoTokenizer

    folder = _tokenizer_folder(name, cache_dir, local_files_only, subfolder, what)
    if not (folder / "tokenizer.json").is_file() and (folder / "spiece.model").is_file():
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        return t5_tokenizer_from_sentencepiece(
            (folder / "spiece.model").read_bytes(), int(config.get("extra_ids", 100))
        )
    return call_hub(AutoTokenizer.from_pretrained, str(folder), what, subfolder)


def _load_model(
    model_cls: Any, name: str, what: str, cache_dir, local_files_only, subfolder, dtype
) -> nn.Module:
    if looks_like_local_path(name):
        folder = resolve_local_folder(name, subfolder, what, legacy_children=("t5-v1_1-xxl",))
        return call_hub(model_cls.from_pretrained, str(folder), what, subfolder, dtype=dtype)
    kwargs = hub_kwargs(cache_dir, local_files_only, subfolder)
    return call_hub(model_cls.from_pretrained, name, what, subfolder, dtype=dtype, **kwargs)


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("encode() takes a list of prompts, got a single string; wrap it in a list")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("encode() got an empty list of prompts")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must be strings; entries {bad[:5]} are {type(prompts[bad[0]]).__name__}")
    return prompts


def _dedupe(prompts: list[str]) -> tuple[list[str], torch.Tensor]:
    """Unique prompts (first-seen order) and, per input prompt, the index of its unique entry."""
    position: dict[str, int] = {}
    index = [position.setdefault(p, len(position)) for p in prompts]
    return list(position), torch.tensor(index, dtype=torch.long)


def _null_embedding(y_embedder: Any, owner: str) -> torch.Tensor:
    emb = getattr(y_embedder, "y_embedding", None)
    if not isinstance(emb, torch.Tensor):
        raise ValueError(
            f"{owner}: the model's y_embedder has no tensor 'y_embedding' (the learned null caption)"
        )
    return emb


def _y_embedder_of(model: nn.Module, owner: str) -> Any:
    y_embedder = getattr(model, "y_embedder", None)
    if y_embedder is None:
        raise ValueError(
            f"{owner}: {type(model).__name__} has no 'y_embedder'; the null caption for classifier-free guidance "
            f"is the diffusion model's y_embedder.y_embedding"
        )
    return y_embedder


# ----------------------------------------------------------------------------------------------- encoders
class _FrozenHFEncoder:
    """A frozen Hugging Face text model on ``device``; :meth:`release` frees its weights and the next
    :meth:`loaded` call builds them again with ``reload`` (the builder's loader), on the same device and dtype."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        model_max_length: int,
        device: torch.device | str = "cpu",
        reload: Callable[[], nn.Module] | None = None,
    ):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.model_max_length = int(model_max_length)
        self.device = torch.device(device)
        self.y_embedder: Any = None
        self._dtype = next(model.parameters()).dtype
        self._reload = reload

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def released(self) -> bool:
        """True after :meth:`release` until the weights are loaded again."""
        return next(self.model.parameters()).device.type == "meta"

    def release(self) -> None:
        """Free the weights (memory on every device): they move to the ``meta`` device."""
        self.model = self.model.to("meta")

    def loaded(self) -> nn.Module:
        """The model, loaded again first if :meth:`release` freed it."""
        if self.released:
            if self._reload is None:
                raise RuntimeError(
                    f"{type(self).__name__}: the weights were released and no loader was given to load them again"
                )
            self.model = self._reload().to(device=self.device, dtype=self._dtype).eval().requires_grad_(False)
        return self.model


class T5TextEncoder(_FrozenHFEncoder):
    """A frozen T5 encoder and its tokenizer; ``encode(prompts) -> {"y": [B,1,L,D], "mask": [B,L]}``."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        model_max_length: int,
        device: torch.device | str = "cpu",
        reload: Callable[[], nn.Module] | None = None,
    ):
        super().__init__(model, tokenizer, model_max_length, device, reload)
        self.output_dim = int(model.config.d_model)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask ``[B, L]`` (padded to ``model_max_length``, truncated, EOS added)."""
        tokens = self.tokenizer(
            _check_prompts(prompts),
            max_length=self.model_max_length,
            padding="max_length",
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return tokens["input_ids"], tokens["attention_mask"]

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Encode prompts; identical prompts are tokenized and run through the model once."""
        unique, index = _dedupe(_check_prompts(prompts))
        ids, mask = self.tokenize(unique)  # [U, L]
        ids, mask, index = ids.to(self.device), mask.to(self.device), index.to(self.device)
        hidden = self.loaded()(input_ids=ids, attention_mask=mask).last_hidden_state  # [U, L, D]
        return {"y": hidden[index][:, None], "mask": mask[index]}  # [B, 1, L, D], [B, L]

    def set_null_from_model(self, model: nn.Module) -> None:
        """Use ``model.y_embedder.y_embedding`` (``[L, D]``, tracked live) as the null caption."""
        self.y_embedder = _y_embedder_of(model, "T5TextEncoder.set_null_from_model")

    def null(self, n: int, model: nn.Module | None = None) -> torch.Tensor:
        """Null caption ``[n, 1, L, D]`` from the diffusion model's learned ``y_embedding``."""
        y_embedder = _y_embedder_of(model, "T5TextEncoder.null") if model is not None else self.y_embedder
        if y_embedder is None:
            raise ValueError(
                "T5TextEncoder.null: no null embedding; call set_null_from_model(model) or pass model=... "
                "(the null caption is the diffusion model's y_embedder.y_embedding)"
            )
        emb = _null_embedding(y_embedder, "T5TextEncoder.null")
        if tuple(emb.shape) != (self.model_max_length, self.output_dim):
            raise ValueError(
                f"T5TextEncoder.null: y_embedding has shape {tuple(emb.shape)} but the text encoder gives "
                f"(model_max_length, output_dim) = ({self.model_max_length}, {self.output_dim}); build the "
                f"diffusion model with model_max_length={self.model_max_length} and caption_channels={self.output_dim}"
            )
        return emb[None].repeat(n, 1, 1)[:, None]  # [n, 1, L, D]


class ClipTextEncoder(_FrozenHFEncoder):
    """A frozen CLIP text model; ``encode(prompts) -> {"y": pooled [B, 1, 1, hidden]}``."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        model_max_length: int = 77,
        device: torch.device | str = "cpu",
        reload: Callable[[], nn.Module] | None = None,
    ):
        super().__init__(model, tokenizer, model_max_length, device, reload)
        self.output_dim = int(model.config.hidden_size)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pooled CLIP text features; identical prompts are encoded once."""
        unique, index = _dedupe(_check_prompts(prompts))
        tokens = self.tokenizer(
            unique,
            max_length=self.model_max_length,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids = tokens["input_ids"].to(self.device)  # [U, L]
        pooled = self.loaded()(input_ids=ids).pooler_output  # [U, hidden]
        return {"y": pooled[index.to(self.device)][:, None, None]}  # [B, 1, 1, hidden]

    def set_null_from_model(self, model: nn.Module) -> None:
        """Use the diffusion model's ``y_embedder.y_embedding`` as null caption instead of CLIP("")."""
        self.y_embedder = _y_embedder_of(model, "ClipTextEncoder.set_null_from_model")

    def null(self, n: int, model: nn.Module | None = None) -> torch.Tensor:
        """Null caption ``[n, 1, 1, hidden]``: the model's ``y_embedding`` when set, else CLIP of ``""``."""
        y_embedder = _y_embedder_of(model, "ClipTextEncoder.null") if model is not None else self.y_embedder
        if y_embedder is None:
            return self.encode([""] * n)["y"]
        emb = _null_embedding(y_embedder, "ClipTextEncoder.null").reshape(1, 1, 1, -1)
        return emb.repeat(n, 1, 1, 1)


class ClassEncoder:
    """Class-conditional "text": prompts are class ids as strings -> ``{"y": LongTensor [B]}``."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = int(num_classes)
        self.device = torch.device(device)
        self.model_max_length = None
        self.output_dim = None

    def encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Parse class ids; each must be an integer in ``[0, num_classes)``."""
        ids = []
        for i, prompt in enumerate(_check_prompts(prompts)):
            try:
                value = int(prompt.strip())
            except ValueError:
                raise ValueError(
                    f"text_encoder type 'classes' expects class ids as prompts; prompt {i} is {prompt!r}, "
                    f"not an integer (use a t5/clip text encoder for free text)"
                ) from None
            if not 0 <= value < self.num_classes:
                raise ValueError(f"class id {value} (prompt {i}) is outside [0, {self.num_classes})")
            ids.append(value)
        return {"y": torch.tensor(ids, dtype=torch.long, device=self.device)}

    def null(self, n: int, model: nn.Module | None = None) -> torch.Tensor:
        """The null class (``num_classes``) repeated ``n`` times."""
        return torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)


# ------------------------------------------------------------------------------------------------ factory
def _placement(
    cfg: T5Config | ClipConfig, device: torch.device, dtype: torch.dtype
) -> tuple[torch.device, torch.dtype]:
    """The config's ``device`` / ``dtype`` when set, else the caller's."""
    from opensora_core.models.layers import to_torch_dtype

    return (
        torch.device(cfg.device) if cfg.device else device,
        to_torch_dtype(cfg.dtype) if cfg.dtype else dtype,
    )


def build_t5(cfg: T5Config, device: torch.device, dtype: torch.dtype) -> T5TextEncoder:
    """The T5 encoder of a validated config, on `device` in `dtype` (``cfg.device`` / ``cfg.dtype`` win)."""
    device, dtype = _placement(cfg, device, dtype)
    name = cfg.from_pretrained
    if is_debug_id(name):
        from opensora_core.models import tiny

        model, tokenizer = tiny.load_debug_text_model(name, "t5")

        def load() -> nn.Module:
            return tiny.load_debug_text_model(name, "t5")[0]

    else:
        from transformers import T5EncoderModel

        args = (name, "T5 text encoder", cfg.cache_dir, cfg.local_files_only, cfg.subfolder)
        tokenizer = load_tokenizer(*args)

        def load() -> nn.Module:
            return _load_model(T5EncoderModel, *args, dtype)

        model = load()
    model = model.to(device=device, dtype=dtype)
    return T5TextEncoder(model, tokenizer, cfg.model_max_length, device, reload=load)


def build_clip(cfg: ClipConfig, device: torch.device, dtype: torch.dtype) -> ClipTextEncoder:
    """The CLIP text encoder of a validated config, on `device` in `dtype` (``cfg.device`` / ``cfg.dtype`` win)."""
    device, dtype = _placement(cfg, device, dtype)
    name = cfg.from_pretrained
    if is_debug_id(name):
        from opensora_core.models import tiny

        model, tokenizer = tiny.load_debug_text_model(name, "clip")

        def load() -> nn.Module:
            return tiny.load_debug_text_model(name, "clip")[0]

    else:
        from transformers import CLIPTextModel

        args = (name, "CLIP text encoder", cfg.cache_dir, cfg.local_files_only, cfg.subfolder)
        tokenizer = load_tokenizer(*args)

        def load() -> nn.Module:
            return _load_model(CLIPTextModel, *args, dtype)

        model = load()
    model = model.to(device=device, dtype=dtype)
    return ClipTextEncoder(model, tokenizer, cfg.model_max_length, device, reload=load)


def build_classes(cfg: ClassesConfig, device: torch.device, dtype: torch.dtype) -> ClassEncoder:
    """The class-label encoder of a validated config (`dtype` is unused: it returns class ids)."""
    return ClassEncoder(cfg.num_classes, device)


def parse_text_encoder_config(cfg: dict[str, Any] | BaseModel) -> TextEncoderConfig:
    """Validate a ``text_encoder`` config dict against its ``TEXT_ENCODERS`` entry (clear errors)."""
    choices = {name: entry.config for name, entry in TEXT_ENCODERS.items()}
    return parse_typed_config(cfg, choices, "text_encoder")  # type: ignore[arg-type,return-value]


def build_text_encoder(
    cfg: dict[str, Any] | BaseModel,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> T5TextEncoder | ClipTextEncoder | ClassEncoder:
    """Build the text encoder described by an Open-Sora ``text_encoder`` config dict.

    >>> enc = build_text_encoder(dict(type="t5", from_pretrained="debug/tiny-t5", model_max_length=16))
    >>> out = enc.encode(["a red circle moving left"]); out["y"].shape, out["mask"].shape
    (torch.Size([1, 1, 16, 32]), torch.Size([1, 16]))
    """
    parsed = parse_text_encoder_config(cfg)
    return TEXT_ENCODERS[parsed.type].load_builder()(parsed, torch.device(device), dtype)


__all__ = [
    "ClassEncoder",
    "ClassesConfig",
    "ClipConfig",
    "ClipTextEncoder",
    "T5Config",
    "T5TextEncoder",
    "build_classes",
    "build_clip",
    "build_t5",
    "build_text_encoder",
    "load_tokenizer",
    "parse_text_encoder_config",
]
