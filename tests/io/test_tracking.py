"""MLflow tracking against a real server, including an outage in the middle of a run."""

from __future__ import annotations

import time

import pytest

from opensora_core.io.tracking import MLflowTracker, build_tracker, flatten, redact


def test_flatten_and_redact():
    flat = flatten({"model": {"type": "STDiT-XL/2", "depth": 2}, "lr": 1e-3, "s3": {"secret_key": "x"}})
    assert flat == {"model.type": "STDiT-XL/2", "model.depth": 2, "lr": 1e-3, "s3.secret_key": "x"}
    assert "s3.secret_key" not in redact(flat)
    assert redact({"aws_access_key_id": "A", "password": "p", "api_token": "t", "lr": 1}) == {"lr": 1}
    flat = {"s3.private_key": "k", "tracking.password": "p", "db.pass": "p", "cache.bypass_cache": True}
    assert redact(flat) == {"cache.bypass_cache": True}


def test_build_tracker_rejects_unknown_backend_and_keys():
    with pytest.raises(ValueError, match="tracking.backend"):
        build_tracker({"backend": "wandb"})
    with pytest.raises(ValueError, match="unknown keys"):
        build_tracker({"backend": "mlflow", "urii": "x"})
    assert build_tracker(None).run_id is None


def test_unreachable_server_never_blocks_training(tmp_path):
    from tests.mlflow_server import free_port

    tracker = MLflowTracker(uri=f"http://127.0.0.1:{free_port()}", experiment="e", request_timeout=1)
    t0 = time.monotonic()
    for step in range(200):
        tracker.log_metrics({"loss": 1.0 / (step + 1)}, step)
    assert time.monotonic() - t0 < 1.0, "logging must only enqueue"
    assert tracker.flush(timeout=1.5) is False
    assert tracker.buffered == 200
    tracker.close(timeout=0.5)


@pytest.mark.integration
def test_mlflow_outage_mid_run_buffers_and_recovers(tmp_path):
    from mlflow.tracking import MlflowClient

    from tests.mlflow_server import start_mlflow_server

    server = start_mlflow_server(tmp_path / "srv")
    try:
        tracker = MLflowTracker(uri=server.uri, experiment="outage", run_name="r1", request_timeout=2)
        tracker.log_params({"model": {"type": "STDiT-XL/2"}, "password": "hunter2"})
        tracker.set_tags({"git_commit": "abc"})
        for step in range(5):
            tracker.log_metrics({"loss": 1.0 - 0.1 * step}, step)
        assert tracker.flush(timeout=20)
        run_id = tracker.run_id

        server.stop()  # outage: training keeps logging
        t0 = time.monotonic()
        for step in range(5, 15):
            tracker.log_metrics({"loss": 1.0 - 0.05 * step}, step)
        assert time.monotonic() - t0 < 0.5
        assert tracker.flush(timeout=3) is False

        server.start()  # same port, same store
        assert tracker.flush(timeout=40)
        tracker.close()

        client = MlflowClient(server.uri)
        history = client.get_metric_history(run_id, "loss")
        assert sorted(m.step for m in history) == list(range(15))
        run = client.get_run(run_id)
        assert run.data.params["model.type"] == "STDiT-XL/2"
        assert "password" not in run.data.params
        assert run.data.tags["git_commit"] == "abc"
        assert run.info.status == "FINISHED"
        # resuming continues the same run
        resumed = MLflowTracker(uri=server.uri, experiment="outage", run_id=run_id)
        resumed.log_metrics({"loss": 0.1}, 15)
        resumed.close()
        assert len(client.get_metric_history(run_id, "loss")) == 16
    finally:
        server.stop()


@pytest.mark.integration
def test_system_metrics_and_step_images_reach_a_real_run(mlflow_server):
    import numpy as np
    from mlflow.tracking import MlflowClient

    tracker = MLflowTracker(uri=mlflow_server.uri, experiment="system", system_metrics_interval_s=0.2)
    for step in (2, 4):
        tracker.log_image(np.full((8, 16, 3), 40 * step, dtype=np.uint8), key="preview", step=step)
    time.sleep(1.5)  # a few samples of MLflow's monitor
    tracker.close()

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(tracker.run_id)
    system = {k for k in run.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system
    assert len(client.get_metric_history(tracker.run_id, "system/cpu_utilization_percentage")) >= 2
    images = [a.path for a in client.list_artifacts(tracker.run_id, "images")]
    steps = sorted(int(p.split("+step+")[1].split("+")[0]) for p in images if p.endswith(".png"))
    assert steps == [2, 4] and all(p.startswith("images/preview+step+") for p in images)
    assert run.info.status == "FINISHED"


def test_system_metrics_can_be_switched_off(mlflow_server):
    from mlflow.tracking import MlflowClient

    tracker = build_tracker(
        {"backend": "mlflow", "uri": mlflow_server.uri, "experiment": "quiet", "system_metrics_interval_s": 0}
    )
    tracker.log_metrics({"loss": 1.0}, step=1)
    time.sleep(0.5)
    tracker.close()
    metrics = MlflowClient(mlflow_server.uri).get_run(tracker.run_id).data.metrics
    assert metrics == {"loss": 1.0}
