"""Small helpers that turn config mistakes into actionable messages."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

# Key names that look like credentials. Configs are saved with every run and checkpoint and logged as MLflow
# params, so secrets must never live in them, and tracking/registry drop such keys. "pass" counts only as a
# whole word ("db_pass", "tracking.pass"), so "bypass_cache" or "num_passes" are not secrets.
_SECRET_KEY_RE = re.compile(
    r"passw(or)?d|(^|[^a-z])pass($|[^a-z])|secret|token|credential|access[_-]?key|api[_-]?key|private[_-]?key",
    re.IGNORECASE,
)

SECRET_HINT = (
    "secrets do not belong in config files (configs are saved with every run and logged to MLflow); "
    "pass credentials through environment variables instead (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
    "for object storage, MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD for MLflow)"
)


_FEATURES = (
    "Open-Sora 1.2's training on precomputed features (scripts/misc/extract_feat.py writes them, "
    "BatchFeatureDataset reads them); not implemented here: the trainer encodes videos and captions itself, "
    "so train with configs/opensora-v1-2/train/stage1.py instead"
)
_EXTRACT = (
    "Open-Sora 1.2's feature-extraction tool (scripts/misc/extract_feat.py, configs/opensora-v1-2/misc/"
    "extract.py); this platform has no feature extraction"
)
_BS_SEARCH = (
    "Open-Sora 1.2's batch-size search tool (scripts/misc/search_bs.py, configs/opensora-v1-2/misc/bs.py); "
    "this platform has no batch-size search: set bucket_config batch sizes directly"
)
# Keys of upstream Open-Sora tools this platform does not have: (dotted) key -> what it belongs to. The
# loader names the tool instead of guessing a "did you mean".
UPSTREAM_TOOL_KEYS: dict[str, str] = {
    "load_text_features": _FEATURES,
    "load_video_features": _FEATURES,
    "vae_out_channels": _FEATURES,
    "text_encoder_output_dim": _FEATURES,
    "model_max_length": _FEATURES,
    "model.skip_y_embedder": _FEATURES,
    "dataset.dummy_text_feature": _FEATURES,
    "dataset.type=BatchFeatureDataset": _FEATURES,
    "save_text_features": _EXTRACT,
    "save_compressed_text_features": _EXTRACT,
    "bin_size": _EXTRACT,
    "log_time": _EXTRACT,
    "base": _BS_SEARCH,
    "base_step_time": _BS_SEARCH,
}


UPSTREAM_TOOL_MARK = "not supported: a key of"


def upstream_tool_problem(key: str) -> str | None:
    """``"KEY: ..."`` naming the upstream tool a key belongs to, or None for keys of no known tool."""
    reason = UPSTREAM_TOOL_KEYS.get(key)
    return f"{key}: {UPSTREAM_TOOL_MARK} {reason}" if reason else None


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate closest to `name` (difflib ratio >= 0.6, case-insensitive), or None."""
    cands = [str(c) for c in candidates]
    lowered = {c.lower(): c for c in cands}
    match = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def did_you_mean(name: str, candidates: Iterable[str], prefix: str = "") -> str:
    """Return "; did you mean 'PREFIXbest'?" for the closest candidate, or "" when nothing is close."""
    best = closest(name, candidates)
    return f"; did you mean '{prefix}{best}'?" if best is not None else ""


def is_secret_key(key: object) -> bool:
    """True when a key name looks like it holds a credential (password, secret_key, private_key, token, ...).

    The one test for config keys (rejected by the loader) and for tracking params, tags and registry tags
    (dropped); dotted keys (``tracking.password``) are matched by their parts.
    """
    return isinstance(key, str) and bool(_SECRET_KEY_RE.search(key))


def join_path(*parts: object) -> str:
    """Join location parts into a dotted path: ("model", "depth") -> "model.depth"; ints become [i]."""
    out = ""
    for p in parts:
        if isinstance(p, int) and not isinstance(p, bool):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out
