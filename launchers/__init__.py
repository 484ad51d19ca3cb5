"""Training-job launchers: typed spec -> PyTorchJob / TrainJob manifest -> validated -> run and watched.

Also the train step's body (:mod:`launchers.train`), the KFP TaskConfig translation (:mod:`launchers.task_config`),
the local torchrun launcher (:mod:`launchers.local`) and the image names (:mod:`launchers.images`). Imported by
``components`` and ``workflows``, never by ``opensora_core``. Importing this package is cheap: no kfp, and
``kubernetes`` only when ``runner.run_job`` talks to a cluster.
"""

from launchers.pytorchjob import build_pytorchjob
from launchers.spec import ElasticPolicy, SecretKeyEnv, Toleration, TrainingJobSpec, Volume
from launchers.status import JobPhase, JobStatus, job_status, summarize
from launchers.trainjob import build_trainjob
from launchers.validate import ManifestValidationError, check_manifest, validate_manifest

__all__ = [
    "ElasticPolicy",
    "JobPhase",
    "JobStatus",
    "ManifestValidationError",
    "SecretKeyEnv",
    "Toleration",
    "TrainingJobSpec",
    "Volume",
    "build_pytorchjob",
    "build_trainjob",
    "check_manifest",
    "job_status",
    "summarize",
    "validate_manifest",
]
