"""Training-job launchers: typed spec -> PyTorchJob / TrainJob manifest -> validated -> run and watched.

Importing this package is cheap: no kfp, and ``kubernetes`` only when ``runner.run_job`` talks to a cluster.
"""

from components.train.launchers.pytorchjob import build_pytorchjob
from components.train.launchers.spec import ElasticPolicy, SecretKeyEnv, Toleration, TrainingJobSpec, Volume
from components.train.launchers.status import JobPhase, JobStatus, job_status, summarize
from components.train.launchers.trainjob import build_trainjob
from components.train.launchers.validate import ManifestValidationError, check_manifest, validate_manifest

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
