"""Compiled pipelines: committed YAML is fresh; cluster settings (secrets, PVC, tolerations, GPUs) are in it."""

from __future__ import annotations

import yaml
from kfp import compiler

from workflows.compile import WORKFLOWS_DIR, compile_preset, stale_files
from workflows.train import PRESETS, train_pipeline


def _load(path) -> tuple[dict, dict]:
    pipeline, platform = yaml.safe_load_all(path.read_text())
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_committed_yaml_is_not_stale():
    assert sorted(p.filename for p in PRESETS.values()) == [
        "train_256.yaml",
        "train_512.yaml",
        "train_v1_1.yaml",
    ]
    assert stale_files() == [], "run `make workflows` and commit workflows/*.yaml"


def test_stale_check_detects_a_changed_file(tmp_path):
    for name in [p.filename for p in PRESETS.values()] + ["curate.yaml"]:
        (tmp_path / name).write_text((WORKFLOWS_DIR / name).read_text())
    assert stale_files(tmp_path) == []
    path = tmp_path / "train_512.yaml"
    path.write_text(path.read_text().replace("16x512x512.py", "16x256x256.py"))
    assert stale_files(tmp_path) == ["train_512.yaml"]


def test_presets_set_their_defaults():
    expected = {
        "train_256": ("configs/opensora/train/16x256x256.py", "(256, 256)"),
        "train_512": ("configs/opensora/train/16x512x512.py", "(512, 512)"),
        "train_v1_1": ("configs/opensora-v1-1/train/stage1.py", None),
    }
    for name, (config, size) in expected.items():
        spec, _ = _load(WORKFLOWS_DIR / PRESETS[name].filename)
        params = spec["root"]["inputDefinitions"]["parameters"]
        assert params["config"]["defaultValue"] == config
        if size:
            assert size in params["cfg_options"]["defaultValue"][0]
        for key in (
            "raw_data_uri",
            "num_nodes",
            "gpus_per_node",
            "sp_size",
            "train_image",
            "runtime_image",
            "mlflow_tracking_uri",
            "mlflow_experiment",
            "model_name",
            "gate",
            "cfg_options",
        ):
            assert key in params, key
    spec, _ = _load(WORKFLOWS_DIR / "train_v1_1.yaml")
    assert (
        "multi_resolution=STDiT2"
        in spec["root"]["inputDefinitions"]["parameters"]["eval_overrides"]["defaultValue"]
    )


def test_passthrough_secrets_pvc_tolerations_and_gpus():
    spec, executors = _load(WORKFLOWS_DIR / "train_512.yaml")
    train = executors["exec-train"]
    s3 = next(
        s
        for s in train["secretAsEnv"]
        if s["secretNameParameter"]["componentInputParameter"] == "train_s3_secret_name"
    )
    assert {m["envVar"] for m in s3["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    mlflow = next(s for s in train["secretAsEnv"] if s["optional"])
    assert {m["envVar"] for m in mlflow["keyToEnv"]} == {
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    }
    assert train["pvcMount"][0]["mountPath"] == "/cache"
    assert train["pvcMount"][0]["pvcNameParameter"]["componentInputParameter"] == "cache_pvc"
    assert train["tolerations"][0]["tolerationJson"]["componentInputParameter"] == "tolerations"
    assert train["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"] == "node_selector"
    assert {e["envVar"] for e in train["configMapAsEnv"][0]["keyToEnv"]} >= {
        "MLFLOW_TRACKING_URI",
        "S3_ENDPOINT_URL",
    }
    for step in ("exec-prepare-data", "exec-evaluate", "exec-register"):
        assert executors[step]["secretAsEnv"], step

    passthrough = {
        p["field"]: p.get("applyToTask", False)
        for p in spec["components"]["comp-train"]["taskConfigPassthroughs"]
    }
    assert passthrough == {
        "RESOURCES": False,
        "KUBERNETES_TOLERATIONS": False,
        "KUBERNETES_NODE_SELECTOR": False,
        "ENV": True,
        "KUBERNETES_VOLUMES": True,
    }
    containers = spec["deploymentSpec"]["executors"]
    gpus = containers["exec-train"]["container"]["resources"]["accelerator"]
    assert "gpus_per_node" in gpus["resourceCount"] and "accelerator_type" in gpus["resourceType"]
    assert "train_image" in containers["exec-evaluate"]["container"]["image"]
    assert "runtime_image" in containers["exec-train"]["container"]["image"]
    # secrets never appear as values in the compiled pipeline
    text = (WORKFLOWS_DIR / "train_512.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY:" not in text and "password:" not in text.lower()


def test_pipeline_outputs_and_task_graph(tmp_path):
    path = compile_preset("train_256", tmp_path / "p.yaml")
    spec, _ = _load(path)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"prepare-data", "train", "evaluate", "register"}
    assert tasks["train"]["dependentTasks"] == ["prepare-data"]
    assert set(tasks["register"]["dependentTasks"]) == {"evaluate", "prepare-data", "train"}
    outputs = spec["root"]["outputDefinitions"]["parameters"]
    assert set(outputs) == {
        "checkpoint_uri",
        "metrics",
        "eval_output_uri",
        "model_version",
        "aliases",
        "champion",
    }
    compiler.Compiler().compile(train_pipeline, str(tmp_path / "default.yaml"))  # plain defaults compile too


def test_presets_load_for_training_and_evaluation(tmp_path):
    """Each preset's config + cfg_options is a valid training config, and evaluation can sample from it."""
    from opensora_core.config import load_config
    from opensora_core.eval.evaluate import sampling_config

    for name, preset in PRESETS.items():
        params = preset.parameters
        cfg = load_config(
            params["config"], overrides=[*params["cfg_options"], "dataset.data_path=s3://d/meta.csv"]
        )
        cfg.check_ready(training=True)
        cfg.save(tmp_path / name)
        sampling = sampling_config(
            tmp_path / name / "config.json",
            "/ckpt/ema.safetensors",
            tmp_path / "s",
            params.get("eval_overrides", []),
            num_sampling_steps=100,
        )
        sampling = sampling.model_copy(update={"prompt": ["a red square moving left"]})
        sampling.check_ready(training=False)
        assert sampling.dataset.data_path == "s3://d/meta.csv" and sampling.num_frames == 16


def test_training_reads_the_train_split_and_evaluation_the_held_out_split():
    spec, _ = _load(WORKFLOWS_DIR / "train_256.yaml")
    tasks = spec["root"]["dag"]["tasks"]

    def source(task: str, param: str) -> tuple[str, str]:
        ref = tasks[task]["inputs"]["parameters"][param]["taskOutputParameter"]
        return ref["producerTask"], ref["outputParameterKey"]

    assert source("train", "metadata_uri") == ("prepare-data", "train_metadata_uri")
    assert source("evaluate", "val_table") == ("prepare-data", "eval_metadata_uri")
    assert tasks["prepare-data"]["inputs"]["parameters"]["eval_fraction"] == {
        "componentInputParameter": "eval_fraction"
    }
    evaluate = tasks["evaluate"]["inputs"]["parameters"]
    assert evaluate["clip_model"] == {"componentInputParameter": "eval_clip_model"}
    assert evaluate["fvd_extractor"] == {"componentInputParameter": "eval_fvd_extractor"}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["eval_clip_model"]["defaultValue"] == "" == params["eval_fvd_extractor"]["defaultValue"]


def test_caching_on_for_prepare_and_evaluate_off_for_train_and_policy_env_for_train():
    spec, executors = _load(WORKFLOWS_DIR / "train_512.yaml")
    tasks = spec["root"]["dag"]["tasks"]
    cached = {name: bool(task.get("cachingOptions", {}).get("enableCache")) for name, task in tasks.items()}
    assert cached == {"prepare-data": True, "train": False, "evaluate": True, "register": False}
    env = {e["envVar"] for entry in executors["exec-train"]["configMapAsEnv"] for e in entry["keyToEnv"]}
    assert {"OPENSORA_ALLOWED_NAMESPACES", "OPENSORA_ALLOWED_PVCS", "OPENSORA_ALLOWED_SECRETS"} <= env
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert {"queue_name", "priority_class", "shm_size", "nccl_env", "affinity", "grace_period_s"} <= set(
        inputs
    )
