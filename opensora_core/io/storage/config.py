"""S3 endpoint configuration (:class:`S3Config`), from arguments or the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from .retry import RetryPolicy

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3 minimum for every part but the last
MAX_PARTS = 10_000  # S3 maximum number of parts of one upload

# Endpoint variables, first match wins (S3_ENDPOINT_URL is ours; the others are MLflow's and the AWS SDKs').
ENDPOINT_ENV_VARS = ("S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def _parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"environment variable {name}={value!r} is not a boolean; use true/false or 1/0")


class S3Config(BaseModel):
    """How to reach the S3 endpoint. Secrets are ``SecretStr`` and print as ``'**********'``."""

    # hide_input_in_errors: a rejected value may be a secret (or an endpoint URL with credentials in it).
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    endpoint_url: str = Field(
        "https://s3.amazonaws.com", description="http(s)://host[:port]; TLS is used for https"
    )
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    session_token: SecretStr | None = None
    region: str | None = None
    verify_tls: bool = Field(True, description="verify the server certificate (https endpoints)")
    ca_bundle: Path | None = Field(None, description="PEM bundle of CAs to trust instead of certifi's")
    max_attempts: int = Field(5, ge=1, le=50, description="attempts per request on transient errors")
    backoff_initial_s: float = Field(0.5, ge=0.0)
    backoff_max_s: float = Field(8.0, ge=0.0)
    part_size: int = Field(16 * MiB, ge=MIN_PART_SIZE, le=5 * 1024 * MiB, description="multipart part size")
    connect_timeout_s: float = Field(10.0, gt=0.0)
    read_timeout_s: float = Field(300.0, gt=0.0)

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        value = value.strip()
        if "://" not in value:
            value = "https://" + value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"endpoint_url must start with http:// or https://, got scheme {parts.scheme!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("endpoint_url must not embed credentials; set access_key/secret_key instead")
        if not parts.hostname:
            raise ValueError("endpoint_url has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("endpoint_url must be scheme://host[:port] without a path or query")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"endpoint_url has an invalid port: {exc}") from None
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        return f"{parts.scheme}://{host}" + (f":{port}" if port else "")

    @model_validator(mode="after")
    def _check_keys(self) -> S3Config:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError(
                "access_key and secret_key must be given together (or neither, for anonymous access)"
            )
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise ValueError(f"ca_bundle {str(self.ca_bundle)!r} is not a file")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        return self

    @property
    def secure(self) -> bool:
        """True when the endpoint is https (TLS on)."""
        return self.endpoint_url.startswith("https://")

    @property
    def host(self) -> str:
        """``host[:port]`` as the minio client wants it."""
        return self.endpoint_url.split("://", 1)[1]

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_initial_s, self.backoff_max_s)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> S3Config:
        """Build a config from environment variables (``os.environ`` unless ``env`` is given).

        Endpoint: the first of ``S3_ENDPOINT_URL``, ``MLFLOW_S3_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``,
        ``AWS_ENDPOINT_URL``. Keys: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``.
        Region: ``AWS_REGION`` or ``AWS_DEFAULT_REGION``. TLS: ``S3_VERIFY_TLS`` (true/false; MLflow's
        ``MLFLOW_S3_IGNORE_TLS=true`` also disables verification), CA bundle ``S3_CA_BUNDLE`` or
        ``AWS_CA_BUNDLE``. Retries: ``S3_MAX_ATTEMPTS``. Part size: ``S3_PART_SIZE_MB``.
        Keyword ``overrides`` win over the environment.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}

        def first(*names: str) -> str | None:
            return next((env[n] for n in names if env.get(n)), None)

        endpoint = first(*ENDPOINT_ENV_VARS)
        if endpoint:
            values["endpoint_url"] = endpoint
        if env.get("AWS_ACCESS_KEY_ID"):
            values["access_key"] = env["AWS_ACCESS_KEY_ID"]
        if env.get("AWS_SECRET_ACCESS_KEY"):
            values["secret_key"] = env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            values["session_token"] = env["AWS_SESSION_TOKEN"]
        region = first("AWS_REGION", "AWS_DEFAULT_REGION")
        if region:
            values["region"] = region
        if env.get("S3_VERIFY_TLS"):
            values["verify_tls"] = _parse_bool("S3_VERIFY_TLS", env["S3_VERIFY_TLS"])
        elif env.get("MLFLOW_S3_IGNORE_TLS") and _parse_bool(
            "MLFLOW_S3_IGNORE_TLS", env["MLFLOW_S3_IGNORE_TLS"]
        ):
            values["verify_tls"] = False
        ca = first("S3_CA_BUNDLE", "AWS_CA_BUNDLE")
        if ca:
            values["ca_bundle"] = ca
        for name, field, conv in (
            ("S3_MAX_ATTEMPTS", "max_attempts", int),
            ("S3_PART_SIZE_MB", "part_size", lambda s: int(float(s) * MiB)),
        ):
            if env.get(name):
                try:
                    values[field] = conv(env[name])
                except ValueError:
                    raise ValueError(f"environment variable {name}={env[name]!r} is not a number") from None
        values.update(overrides)
        return cls.model_validate(values)
