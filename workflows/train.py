"""The training pipeline: prepare_data -> train -> evaluate -> register.

    from workflows.train import train_pipeline, PRESETS
    kfp.compiler.Compiler().compile(train_pipeline, "train_512.yaml",
                                    pipeline_parameters=PRESETS["train_512"].parameters)

Parameters (all overridable per run; the compiled presets only change defaults):

- data and config: ``config`` (a path inside the images, e.g. ``configs/opensora/train/16x512x512.py``),
  ``cfg_options`` (``KEY=VALUE`` overrides), ``raw_data_uri`` (videos + captions, ``s3://`` or a path),
  ``metadata_uri`` (empty: the run-scoped ``{prepared_data_uri}/{pipeline run id}/meta.csv``, never a
  file inside the raw input), ``outputs_uri`` / ``eval_output_uri`` (checkpoints and
  evaluation videos go to ``{uri}/{pipeline run id}``);
- scale: ``launcher`` (pytorchjob | trainjob | local), ``num_nodes``, ``gpus_per_node``, ``procs_per_node`` (CPU
  jobs, local), ``sp_size``, ``accelerator_type``, ``tolerations`` (list of Kubernetes tolerations),
  ``node_selector`` (dict), ``namespace``, ``service_account`` (both within the admin's allow-list, see
  launchers/policy.py), ``timeout_hours``, ``queue_name`` (Kueue), ``priority_class``, ``shm_size``, ``nccl_env``
  (dict of NCCL_* variables), ``affinity`` (pod affinity JSON), ``grace_period_s`` (terminationGracePeriodSeconds,
  0: the launcher's default; see docs/training.md "Preemption");
- images: ``runtime_image`` (prepare/train launcher/register), ``train_image`` (the training job and the
  evaluation step, which samples on a GPU);
- tracking and registry: ``mlflow_tracking_uri`` (empty: from the platform ConfigMap), ``mlflow_experiment``,
  ``model_name`` (empty: one registered model per family and clip size, ``opensora-stdit-256``, from the
  checkpoint's config), ``gate`` (``{"thresholds": {"metric": min, "metric<=": max}, "margins": {"val_loss":
  0.02}}``, empty: the defaults of ``opensora_core.eval.gate``: beat the untrained model's validation loss by
  10% and, when a champion exists, be at most 2% worse than it, paired on the same held-out clips), ``git_commit``;
- evaluation: ``eval_prompts`` (empty: the synthetic captions), ``eval_weights``, ``eval_overrides``,
  ``eval_sampling_steps``, ``eval_cfg_scale``, ``eval_seed``, ``eval_batch_size``, ``eval_gpus`` (GPUs of the
  evaluate pod, one data-parallel rank each),
  ``eval_fraction`` (share of the clips held out of training, by a hash of the path), ``eval_timesteps``
  (timesteps of the validation loss on those clips), ``eval_clip_model`` (CLIP hub id or folder for
  ``clip_score``; empty: off) and ``eval_fvd_extractor`` (TorchScript file, e.g. I3D's, or a transformers video
  model for ``fvd`` against the held-out clips; empty: off);
- cluster wiring (kfp-kubernetes): ``config_map_name`` (endpoints as env: MLFLOW_TRACKING_URI,
  S3_ENDPOINT_URL, ...), one S3 key pair per step (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY as env), each
  limited by the object store to what its step needs: ``prepare_s3_secret_name`` (datasets),
  ``train_s3_secret_name`` (read datasets, write checkpoints; the training job gets the same pair) and
  ``evaluate_s3_secret_name`` (evaluate and register: read checkpoints, write evaluation outputs);
  ``mlflow_secret_name`` (optional MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), ``cache_pvc`` (a
  ReadWriteMany claim mounted at /cache: the Hugging Face cache of the VAE and text encoder). The defaults are
  the fixed names the Helm chart (helm/opensora-platform) creates: ConfigMap ``opensora-platform``
  (``pipelines.configMapName``), Secrets ``opensora-s3-prepare``, ``opensora-s3-train``,
  ``opensora-s3-evaluate`` (``pipelines.s3Secrets``), Secret ``opensora-mlflow-credentials``
  (``pipelines.mlflowCredentials``, only with MLflow auth) and PVC ``opensora-model-cache``
  (``pipelines.modelCache``). Every step carries the pod label
  ``opensora.io/client=true`` (the chart's NetworkPolicy client label) and runs as uid/gid 10001.

The kfp-kubernetes settings only take effect on a cluster; the local runner (``workflows.demo``) ignores them.
"""

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kfp import dsl, kubernetes

from components.evaluate.component import evaluate
from components.prepare_data.component import prepare_data
from components.register.component import register
from components.train.component import train
from launchers.images import RUNTIME_IMAGE, TRAIN_IMAGE
from launchers.spec import CLIENT_LABEL, IMAGE_UID

PIPELINE_NAME = "opensora-train"
CACHE_MOUNT = "/cache"
# Keys of the platform ConfigMap (helm chart `pipelines.configMapName`) exposed to every step as env.
CONFIG_MAP_ENV = ("MLFLOW_TRACKING_URI", "S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_REGION")
# The admin's allow-list of what the train step may put on the training job (launchers.policy), same ConfigMap.
POLICY_ENV = (
    "OPENSORA_ALLOWED_NAMESPACES",
    "OPENSORA_ALLOWED_SERVICE_ACCOUNTS",
    "OPENSORA_ALLOWED_PVCS",
    "OPENSORA_ALLOWED_CONFIG_MAPS",
    "OPENSORA_ALLOWED_SECRETS",
)
S3_SECRET_ENV = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
MLFLOW_SECRET_ENV = {
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
}
DEFAULT_EVAL_PROMPTS = [
    "a red square moving left",
    "a blue circle moving right",
    "a green square moving up",
    "a yellow circle moving down",
]
# Open-Sora 1.0 configs read a headerless (path, caption) CSV; the prepared table has a header and Open-Sora's
# columns, so the 1.0 presets switch the dataset to VideoTextDataset with the same clip geometry.
_V1_DATASET = '{{"_delete_": True, "type": "VideoTextDataset", "num_frames": 16, "frame_interval": 3, "image_size": ({s}, {s})}}'


class PipelineOutputs(NamedTuple):
    """What a pipeline run returns (the local run prints them)."""

    checkpoint_uri: str
    metrics: dict
    eval_output_uri: str
    model_version: str
    aliases: list
    champion: bool


def _cluster_wiring(
    task: dsl.PipelineTask,
    config_map_name: Any,
    s3_secret_name: Any,
    mlflow_secret_name: Any,
    cache_pvc: Any = None,
) -> dsl.PipelineTask:
    """Endpoints from the ConfigMap, credentials from Secrets (as env, never as parameters), the cache PVC.

    Every step also gets the chart's NetworkPolicy client label and runs as the images' non-root user 10001.
    """
    for key, value in CLIENT_LABEL.items():  # the chart's NetworkPolicy client label
        kubernetes.add_pod_label(task, key, value)
    kubernetes.set_security_context(task, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID, run_as_non_root=True)
    kubernetes.use_config_map_as_env(
        task, config_map_name, {key: key for key in CONFIG_MAP_ENV}, optional=True
    )
    kubernetes.use_secret_as_env(task, s3_secret_name, S3_SECRET_ENV)
    kubernetes.use_secret_as_env(task, mlflow_secret_name, MLFLOW_SECRET_ENV, optional=True)
    if cache_pvc is not None:
        kubernetes.mount_pvc(task, cache_pvc, CACHE_MOUNT)
    return task


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Open-Sora training: prepare metadata -> distributed training (PyTorchJob/TrainJob) -> "
    "evaluation (videos, preview grid, metrics in MLflow) -> MLflow model registration (gated champion).",
)
def train_pipeline(
    config: str = "configs/opensora/train/16x512x512.py",
    cfg_options: list = [],  # noqa: B006 - KFP reads defaults from the signature
    raw_data_uri: str = "s3://opensora-datasets/raw",
    metadata_uri: str = "",
    prepared_data_uri: str = "s3://opensora-datasets/prepared",
    outputs_uri: str = "s3://opensora-checkpoints/runs",
    eval_output_uri: str = "s3://opensora-checkpoints/eval",
    launcher: str = "pytorchjob",
    num_nodes: int = 1,
    gpus_per_node: int = 8,
    procs_per_node: int = 0,
    sp_size: int = 1,
    accelerator_type: str = "nvidia.com/gpu",
    tolerations: list = [],  # noqa: B006
    node_selector: dict = {},  # noqa: B006
    namespace: str = "",
    service_account: str = "",
    timeout_hours: float = 168.0,
    queue_name: str = "",
    priority_class: str = "",
    shm_size: str = "",
    nccl_env: dict = {},  # noqa: B006
    affinity: dict = {},  # noqa: B006
    grace_period_s: int = 0,
    runtime_image: str = RUNTIME_IMAGE,
    train_image: str = TRAIN_IMAGE,
    mlflow_tracking_uri: str = "",
    mlflow_experiment: str = "opensora",
    model_name: str = "",
    gate: dict = {},  # noqa: B006
    git_commit: str = "",
    prepare_workers: int = 8,
    eval_fraction: float = 0.1,
    eval_prompts: list = DEFAULT_EVAL_PROMPTS,
    eval_weights: list = ["ema", "untrained"],  # noqa: B006
    eval_overrides: list = [],  # noqa: B006
    eval_sampling_steps: int = 100,
    eval_cfg_scale: float = -1.0,
    eval_seed: int = 0,
    eval_batch_size: int = 4,
    eval_gpus: int = 1,
    eval_timesteps: int = 10,
    eval_clip_model: str = "",
    eval_fvd_extractor: str = "",
    config_map_name: str = "opensora-platform",
    prepare_s3_secret_name: str = "opensora-s3-prepare",
    train_s3_secret_name: str = "opensora-s3-train",
    evaluate_s3_secret_name: str = "opensora-s3-evaluate",
    mlflow_secret_name: str = "opensora-mlflow-credentials",
    cache_pvc: str = "opensora-model-cache",
) -> PipelineOutputs:
    """prepare_data -> train -> evaluate -> register (see the module docstring for the parameters)."""
    run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    run_name = dsl.PIPELINE_JOB_NAME_PLACEHOLDER  # MLflow runs: <pipeline run>-train, -eval, -register

    prep = prepare_data(
        raw_data_uri=raw_data_uri,
        metadata_uri=metadata_uri,
        prepared_root_uri=prepared_data_uri,
        run_id=run_id,
        workers=prepare_workers,
        eval_fraction=eval_fraction,
    )
    # cached: run_id is an input, so a cache hit only happens when a retry of the same run repeats the step
    # (new data under the same raw_data_uri in a later run is always probed again)
    prep.set_display_name("prepare-data").set_container_image(runtime_image).set_caching_options(True)
    _cluster_wiring(prep, config_map_name, prepare_s3_secret_name, mlflow_secret_name)

    trained = train(
        config=config,
        metadata_uri=prep.outputs["train_metadata_uri"],  # the held-out clips never reach training
        outputs_uri=outputs_uri,
        cfg_options=cfg_options,
        launcher=launcher,
        run_id=run_id,
        run_name=run_name,
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        procs_per_node=procs_per_node,
        sp_size=sp_size,
        image=train_image,
        namespace=namespace,
        service_account=service_account,
        tracking_uri=mlflow_tracking_uri,
        experiment=mlflow_experiment,
        timeout_hours=timeout_hours,
        queue_name=queue_name,
        priority_class=priority_class,
        shm_size=shm_size,
        nccl_env=nccl_env,
        affinity=affinity,
        grace_period_s=grace_period_s,
    )
    # never cached: a train step must train (and resume) rather than replay an earlier run's outputs
    trained.set_display_name("train").set_container_image(runtime_image).set_caching_options(False)
    # Passed through to the training job (TaskConfig): GPUs, tolerations, node selector, env, volumes.
    trained.set_accelerator_type(accelerator_type).set_accelerator_limit(gpus_per_node)
    kubernetes.add_toleration_json(trained, tolerations)
    kubernetes.add_node_selector_json(trained, node_selector)
    # The training job inherits this step's env (TaskConfig), so it runs with the train key pair too.
    _cluster_wiring(trained, config_map_name, train_s3_secret_name, mlflow_secret_name, cache_pvc)
    # the admin's allow-list for the training job (launchers.policy), from the same platform ConfigMap
    kubernetes.use_config_map_as_env(
        trained, config_map_name, {key: key for key in POLICY_ENV}, optional=True
    )

    evaluated = evaluate(
        checkpoint_uri=trained.outputs["checkpoint_uri"],
        output_uri=eval_output_uri,
        prompts=eval_prompts,
        weights=eval_weights,
        overrides=eval_overrides,
        num_sampling_steps=eval_sampling_steps,
        cfg_scale=eval_cfg_scale,
        seed=eval_seed,
        batch_size=eval_batch_size,
        tracking_uri=mlflow_tracking_uri,
        experiment=mlflow_experiment,
        run_id=run_id,
        train_run_id=trained.outputs["mlflow_run_id"],
        val_table=prep.outputs["eval_metadata_uri"],
        num_eval_timesteps=eval_timesteps,
        model_name=model_name,
        gate=gate,
        run_name=run_name,
        clip_model=eval_clip_model,
        fvd_extractor=eval_fvd_extractor,
        processes=eval_gpus,  # one rank per GPU of the pod (0 on CPU: one process)
    )
    # cached: the checkpoint, prompts, seed and sampling settings determine the videos and metrics
    evaluated.set_display_name("evaluate").set_container_image(train_image).set_caching_options(True)
    evaluated.set_accelerator_type(accelerator_type).set_accelerator_limit(eval_gpus)
    kubernetes.add_toleration_json(evaluated, tolerations)
    kubernetes.add_node_selector_json(evaluated, node_selector)
    _cluster_wiring(evaluated, config_map_name, evaluate_s3_secret_name, mlflow_secret_name, cache_pvc)

    registered = register(
        checkpoint_uri=trained.outputs["checkpoint_uri"],
        model_name=evaluated.outputs["model_name"],
        metrics=evaluated.outputs["metrics"],
        gate_decision=evaluated.outputs["gate_decision"],
        tracking_uri=mlflow_tracking_uri,
        experiment=mlflow_experiment,
        eval_run_id=evaluated.outputs["mlflow_run_id"],
        dataset_uri=prep.outputs["metadata_uri"],
        dataset_sha256=prep.outputs["dataset_sha256"],
        image=train_image,
        pipeline_run_id=run_id,
        git_commit=git_commit,
        run_name=run_name,
    )
    registered.set_display_name("register").set_container_image(runtime_image).set_caching_options(False)
    _cluster_wiring(registered, config_map_name, evaluate_s3_secret_name, mlflow_secret_name)

    return PipelineOutputs(
        trained.outputs["checkpoint_uri"],
        evaluated.outputs["metrics"],
        evaluated.outputs["output_uri"],
        registered.outputs["version"],
        registered.outputs["aliases"],
        registered.outputs["champion"],
    )


@dataclass(frozen=True)
class Preset:
    """A compiled variant of the pipeline: its YAML file, display name and parameter defaults."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        """``workflows/<name>.yaml``."""
        return f"{self.name}.yaml"


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "train_256",
            "STDiT-XL/2, 16 frames at 256x256 (Open-Sora 1.0)",
            {
                "config": "configs/opensora/train/16x256x256.py",
                "cfg_options": ["dataset=" + _V1_DATASET.format(s=256)],
                "num_nodes": 1,
                "gpus_per_node": 8,
            },
        ),
        Preset(
            "train_512",
            "STDiT-XL/2, 16 frames at 512x512 (Open-Sora 1.0)",
            {
                "config": "configs/opensora/train/16x512x512.py",
                "cfg_options": ["dataset=" + _V1_DATASET.format(s=512)],
                "num_nodes": 2,
                "gpus_per_node": 8,
            },
        ),
        Preset(
            "train_v1_1",
            "STDiT2-XL/2, multi-resolution buckets (Open-Sora 1.1 stage 1)",
            {
                "config": "configs/opensora-v1-1/train/stage1.py",
                "cfg_options": [],
                "num_nodes": 4,
                "gpus_per_node": 8,
                "eval_overrides": ["multi_resolution=STDiT2", "num_frames=16", "image_size=(240, 426)"],
            },
        ),
    )
}
