"""Save failures degrade, not kill: retries with backoff, skipped periodic saves, N consecutive -> stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from opensora_core.train import checkpoint as ckpt
from opensora_core.train.save_policy import SaveFailuresExceeded, SaveGuard, save_with_retries


class _Tracker:
    def __init__(self) -> None:
        self.metrics: list[tuple[dict, int]] = []
        self.tags: dict[str, str] = {}

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.metrics.append((metrics, step))

    def set_tags(self, tags: dict) -> None:
        self.tags.update(tags)


def _flaky(failures: int):
    calls = {"n": 0}

    def save() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise ckpt.CheckpointError(f"outage {calls['n']}")
        return "uri"

    return save, calls


def test_retries_with_doubling_backoff_then_succeeds():
    waits: list[float] = []
    save, calls = _flaky(2)
    assert save_with_retries(save, retries=2, backoff_s=1.0, sleep=waits.append) == "uri"
    assert calls["n"] == 3 and waits == [1.0, 2.0]


def test_other_errors_are_not_retried():
    def broken() -> str:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        save_with_retries(broken, retries=5, backoff_s=0.0, sleep=lambda s: None)


def test_periodic_failure_is_skipped_reported_and_reset_by_a_success():
    tracker = _Tracker()
    guard = SaveGuard(
        retries=1, backoff_s=0.0, max_failed_saves=2, final_retries=4, tracker=tracker, sleep=lambda s: None
    )
    save, calls = _flaky(2)  # both attempts of the first save fail
    assert guard.periodic(save, step=10) is None
    assert calls["n"] == 2 and guard.consecutive_failures == 1 and guard.skipped_steps == [10]
    assert tracker.metrics[-1] == ({"checkpoint_save_failures": 1.0}, 10)
    assert tracker.tags["checkpoint_last_failure"].startswith("step 10: CheckpointError")
    assert guard.periodic(save, step=20) == "uri"
    assert guard.consecutive_failures == 0 and tracker.metrics[-1] == ({"checkpoint_save_failures": 0.0}, 20)
    assert guard.last_save_s is not None


def test_consecutive_failures_stop_the_run_and_final_save_retries_harder():
    guard = SaveGuard(retries=0, backoff_s=0.0, max_failed_saves=2, final_retries=3, sleep=lambda s: None)
    always, _ = _flaky(10**6)
    assert guard.periodic(always, step=1) is None
    with pytest.raises(SaveFailuresExceeded, match="2 consecutive checkpoint saves failed"):
        guard.periodic(always, step=2)
    save, calls = _flaky(3)
    assert guard.final(save, step=3) == "uri" and calls["n"] == 4


def test_config_fields_are_validated(tiny_config):
    from opensora_core.config import ConfigError

    with pytest.raises(ConfigError, match="max_failed_saves"):
        tiny_config(max_failed_saves=0)
    with pytest.raises(ConfigError, match="experiment_folder"):
        tiny_config(experiment_folder="newest")


@pytest.mark.integration
def test_s3_outage_during_a_periodic_save_training_continues(
    s3_server, s3_bucket, tiny_config, tmp_path: Path, monkeypatch
):
    """SeaweedFS down during the step-4 save: skipped; back up: step 6 lands; `latest` never sees a partial."""
    from opensora_core.io import storage
    from opensora_core.train import train

    config = {**s3_server.storage_config(), "max_attempts": 1}  # no storage-level retries: fail fast
    monkeypatch.setattr(storage.api, "_default_storage", storage.Storage(config))
    monkeypatch.setenv("OPENSORA_CACHE_DIR", str(tmp_path / "cache"))
    outputs = f"s3://{s3_bucket}/runs"
    real_save = ckpt.save_checkpoint
    seen: list[tuple[str, int | None]] = []

    def save_around_outage(env, exp_dir, name, write, **kw):
        step = ckpt.parse_checkpoint_name(name)[1]
        if step == 6:
            s3_server.start()  # the outage is over by the next periodic save
        up = s3_server.proc is not None and s3_server.proc.poll() is None
        latest = ckpt.find_latest_checkpoint(outputs, "STDiT-XL/2") if up else None
        seen.append((name, latest.global_step if latest else None))
        if step == 4:
            s3_server.stop()  # both attempts of the step-4 save meet a stopped SeaweedFS
        return real_save(env, exp_dir, name, write, **kw)

    monkeypatch.setattr(ckpt, "save_checkpoint", save_around_outage)
    try:
        result = train(
            tiny_config(outputs=outputs, max_steps=6, ckpt_every=2, save_retries=1, save_retry_backoff_s=0.1)
        )
    finally:
        s3_server.start()
    assert result.global_step == 6
    steps = [r.global_step for r in ckpt.list_checkpoints(f"{outputs}/000-STDiT-XL-2")]
    assert steps == [2, 6]  # step 4 skipped (2 attempts), training went on and the next save landed
    # before the outage and before the step-6 save, `latest` was the previous complete checkpoint
    assert seen == [
        ("epoch0-global_step2", None),
        ("epoch0-global_step4", 2),
        ("epoch0-global_step4", None),  # server down: not looked up
        ("epoch0-global_step6", 2),
    ]
    assert not storage.exists(f"{outputs}/000-STDiT-XL-2/epoch0-global_step4/_COMPLETE")
