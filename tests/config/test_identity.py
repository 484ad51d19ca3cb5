"""Run identity: the config hash and git commit the trainer and the registry both record."""

from __future__ import annotations

import json
import re

from opensora_core.config import load_config
from opensora_core.config.identity import config_hash, git_commit
from opensora_core.train.reporting import run_tags
from tests.conftest import REPO_ROOT

STAGE2 = REPO_ROOT / "configs/opensora-v1-1/train/stage2.py"  # has bucket_config (int keys in python mode)


def test_training_run_and_model_version_get_the_same_config_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENSORA_GIT_COMMIT", "c" * 40)
    cfg = load_config(STAGE2, overrides={"dataset.data_path": "/data/meta.csv"})
    _, json_path = cfg.save(tmp_path / "checkpoint")
    trainer_tag = run_tags(cfg, {})["config_hash"]  # what the training run is tagged with
    registry_value = config_hash(json.loads(json_path.read_text()))  # what the registry computes from config.json
    assert trainer_tag == registry_value == config_hash(cfg)
    assert re.fullmatch(r"[0-9a-f]{64}", trainer_tag)


def test_config_hash_ignores_locations_and_key_order_but_not_settings():
    cfg = load_config(STAGE2, overrides={"dataset.data_path": "/a.csv"})
    data = cfg.to_dict()
    moved = {**data, "outputs": "s3://other/run", "load": "s3://other/run/ckpt", "start_from_scratch": True}
    moved["dataset"] = {**data["dataset"], "data_path": "s3://datasets/b.csv"}
    assert config_hash(dict(reversed(list(moved.items())))) == config_hash(cfg)
    assert config_hash({**data, "lr": data["lr"] * 2}) != config_hash(cfg)


def test_git_commit_prefers_the_environment_then_the_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENSORA_GIT_COMMIT", raising=False)
    monkeypatch.setenv("GIT_COMMIT", "from-ci")
    assert git_commit() == "from-ci"
    monkeypatch.setenv("OPENSORA_GIT_COMMIT", "from-image")
    assert git_commit() == "from-image"
    monkeypatch.delenv("OPENSORA_GIT_COMMIT")
    monkeypatch.delenv("GIT_COMMIT")
    assert re.fullmatch(r"[0-9a-f]{40}", git_commit(REPO_ROOT) or "")
    assert git_commit(tmp_path) is None  # not a git checkout
