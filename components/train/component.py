"""Pipeline step `train`: launch distributed training and return the checkpoint URI and final metrics.

A thin KFP wrapper: the body calls :func:`launchers.train.run_training` (launcher dispatch, TaskConfig -> job
spec, checkpoint discovery; see components/train/README.md) and writes the small ``checkpoint`` artifact (a JSON
with URI, step and metrics, never the weights).

The step forwards its own Kubernetes settings to the job it creates (KFP TaskConfig passthrough): the GPU
resources set with ``set_accelerator_type/limit`` (not applied to the launcher pod itself), tolerations and
node selectors (idem), env (Secrets as ``secretKeyRef``, never as values) and volumes (also mounted in the
launcher pod, which reads the outputs; use ReadWriteMany claims or object storage).
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Model, Output

from launchers.images import RUNTIME_IMAGE


@dsl.component(
    base_image=RUNTIME_IMAGE,
    packages_to_install=[],
    install_kfp_package=False,
    task_config_passthroughs=[
        dsl.TaskConfigField.RESOURCES,
        dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
        dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR,
        dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
        dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.KUBERNETES_VOLUMES, apply_to_task=True),
    ],
)
def train(
    config: str,
    metadata_uri: str,
    outputs_uri: str,
    checkpoint: Output[Model],
    task_config: dsl.TaskConfig,
    cfg_options: list = None,
    launcher: str = "pytorchjob",
    run_id: str = "",
    run_name: str = "",
    num_nodes: int = 1,
    gpus_per_node: int = 8,
    procs_per_node: int = 0,
    sp_size: int = 1,
    image: str = "",
    namespace: str = "",
    service_account: str = "",
    tracking_uri: str = "",
    experiment: str = "",
    timeout_hours: float = 168.0,
    cleanup: str = "on_success",
    queue_name: str = "",
    priority_class: str = "",
    shm_size: str = "",
    nccl_env: dict = None,
    affinity: dict = None,
    grace_period_s: int = 0,
) -> NamedTuple(
    "TrainOutputs",
    [("checkpoint_uri", str), ("final_metrics", dict), ("mlflow_run_id", str), ("global_step", int)],
):
    """Train ``config`` on ``metadata_uri``; checkpoints go to ``{outputs_uri}/{run_id}`` (local or s3://).

    ``run_name``: the pipeline run's name; the MLflow run is ``{run_name}-train`` (empty: ``{run_id}-train``).

    ``launcher``: pytorchjob | trainjob | local. ``image`` is the training image of the job's pods (empty:
    this release's train image); ``procs_per_node`` (0 = one per GPU) sets processes for CPU jobs and the
    local launcher. ``queue_name``, ``priority_class``, ``shm_size``, ``nccl_env``, ``affinity`` and
    ``grace_period_s`` tune the cluster job (empty: the launcher's defaults; see launchers.train.run_training).
    """
    import json

    from launchers.train import run_training

    outcome = run_training(
        config=config,
        metadata_uri=metadata_uri,
        outputs_uri=outputs_uri,
        launcher=launcher,
        cfg_options=list(cfg_options or []),
        run_id=run_id,
        pipeline_run_name=run_name,
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        procs_per_node=procs_per_node,
        sp_size=sp_size,
        image=image,
        namespace=namespace,
        service_account=service_account,
        tracking_uri=tracking_uri,
        experiment=experiment,
        timeout_hours=timeout_hours,
        cleanup=cleanup,
        task_config=task_config,
        queue_name=queue_name,
        priority_class=priority_class,
        shm_size=shm_size,
        nccl_env=dict(nccl_env or {}),
        affinity=dict(affinity or {}),
        grace_period_s=grace_period_s,
    )
    with open(checkpoint.path, "w", encoding="utf-8") as f:
        json.dump(outcome._asdict(), f, indent=2)
    checkpoint.metadata.update(
        {"checkpoint_uri": outcome.checkpoint_uri, "global_step": outcome.global_step, "config": config}
    )
    return outcome
