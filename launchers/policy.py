"""What a pipeline user may ask of the training job: an allow-list the platform admin sets.

The train step runs with the launcher's ServiceAccount, which may create pods; so the pipeline parameters and
the KFP ``TaskConfig`` must not choose where and with what privileges those pods run. :class:`LaunchPolicy`
checks a :class:`~launchers.spec.TrainingJobSpec` before it is created:

- ``namespace``: this step's own namespace, or one listed in ``OPENSORA_ALLOWED_NAMESPACES``;
- ``service_account``: unset (the namespace's default), or one listed in ``OPENSORA_ALLOWED_SERVICE_ACCOUNTS``;
- volumes: never ``hostPath``; PVCs listed in ``OPENSORA_ALLOWED_PVCS`` (default: the chart's model cache
  claim ``opensora-model-cache``), ConfigMaps in ``OPENSORA_ALLOWED_CONFIG_MAPS``, Secrets in
  ``OPENSORA_ALLOWED_SECRETS`` (default: none); emptyDirs always.

The lists are comma-separated and reach the step as environment variables from the platform ConfigMap (keys of
the same names, see workflows/train.py), so only whoever controls the chart's values can widen them. A refused
value raises :class:`PolicyError` naming the field and the allowed values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from launchers.spec import TrainingJobSpec

ENV_NAMESPACES = "OPENSORA_ALLOWED_NAMESPACES"
ENV_SERVICE_ACCOUNTS = "OPENSORA_ALLOWED_SERVICE_ACCOUNTS"
ENV_PVCS = "OPENSORA_ALLOWED_PVCS"
ENV_CONFIG_MAPS = "OPENSORA_ALLOWED_CONFIG_MAPS"
ENV_SECRETS = "OPENSORA_ALLOWED_SECRETS"
POLICY_ENV = (ENV_NAMESPACES, ENV_SERVICE_ACCOUNTS, ENV_PVCS, ENV_CONFIG_MAPS, ENV_SECRETS)
DEFAULT_PVCS = ("opensora-model-cache",)  # the chart's `pipelines.modelCache` claim


class PolicyError(ValueError):
    """A job setting outside what the platform admin allows; the message names the field."""


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(item.strip() for item in (text or "").split(",") if item.strip())


@dataclass(frozen=True)
class LaunchPolicy:
    """Allowed namespaces, service accounts and volume sources of training jobs (see the module docstring)."""

    namespaces: tuple[str, ...]
    service_accounts: tuple[str, ...] = ()
    pvcs: tuple[str, ...] = DEFAULT_PVCS
    config_maps: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, own_namespace: str, environ: Mapping[str, str] | None = None) -> LaunchPolicy:
        """The policy of this step: its own namespace plus the admin's lists from the environment."""
        environ = os.environ if environ is None else environ
        return cls(
            namespaces=tuple(dict.fromkeys((own_namespace, *_split(environ.get(ENV_NAMESPACES))))),
            service_accounts=_split(environ.get(ENV_SERVICE_ACCOUNTS)),
            pvcs=_split(environ[ENV_PVCS]) if environ.get(ENV_PVCS) else DEFAULT_PVCS,
            config_maps=_split(environ.get(ENV_CONFIG_MAPS)),
            secrets=_split(environ.get(ENV_SECRETS)),
        )

    def check(self, spec: TrainingJobSpec) -> None:
        """Raise :class:`PolicyError` for the first setting of ``spec`` outside the allow-list."""
        _allowed("namespace", spec.namespace, self.namespaces, ENV_NAMESPACES)
        if spec.service_account is not None:
            _allowed("service_account", spec.service_account, self.service_accounts, ENV_SERVICE_ACCOUNTS)
        for vol in spec.volumes:
            field = f"volumes[{vol.name!r}]"
            if vol.host_path:
                raise PolicyError(
                    f"{field}.host_path={vol.host_path!r}: hostPath volumes are not allowed for training jobs "
                    "(they expose the node's file system); use a PVC the admin lists in " + ENV_PVCS
                )
            if vol.pvc:
                _allowed(f"{field}.pvc", vol.pvc, self.pvcs, ENV_PVCS)
            if vol.config_map:
                _allowed(f"{field}.config_map", vol.config_map, self.config_maps, ENV_CONFIG_MAPS)
            if vol.secret:
                _allowed(f"{field}.secret", vol.secret, self.secrets, ENV_SECRETS)


def _allowed(field: str, value: str, allowed: tuple[str, ...], env: str) -> None:
    if value not in allowed:
        raise PolicyError(
            f"{field}={value!r} is not allowed; allowed: {list(allowed) or 'none'} (the platform admin sets "
            f"{env} in the platform ConfigMap, helm value pipelines.*)"
        )
