"""Create or update the pipeline's MLflow user; run by an init container of the MLflow pods (basic auth on).

Environment: MLFLOW_AUTH_CONFIG_PATH (basic_auth.ini with the user store's database_uri; the database password
comes from PGPASSWORD), MLFLOW_AUTH_ADMIN_USERNAME, and MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD from
the pipeline's credentials Secret. The user is not an admin: it owns what it creates (experiments, registered
models) and gets the default permission elsewhere. Safe to run on every start and from several replicas.
"""

from __future__ import annotations

import os
import sys

from mlflow.exceptions import MlflowException
from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore


def ensure_user(store: SqlAlchemyStore, username: str, password: str) -> str:
    """Make ``username`` exist with ``password``; returns "created", "password updated" or "unchanged"."""
    if store.has_user(username, use_primary=True):
        if store.authenticate_user(username, password, use_primary=True):
            return "unchanged"
        store.update_user(username, password=password)
        return "password updated"
    try:
        store.create_user(username, password, is_admin=False)
    except MlflowException:
        if not store.has_user(username, use_primary=True):  # not a race with another replica: a real error
            raise
        store.update_user(username, password=password)
        return "password updated"
    return "created"


def main() -> int:
    """Entry point of the init container."""
    username = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    login_pw = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if not username or not login_pw:
        print(
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD must be set (keys of the pipeline's MLflow "
            "credentials Secret, pipelines.mlflowCredentials)",
            file=sys.stderr,
        )
        return 2
    if username == os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME"):
        print(
            f"the pipeline's MLflow user {username!r} is the admin user; set pipelines.mlflowCredentials.username "
            "to another name",
            file=sys.stderr,
        )
        return 2
    store = SqlAlchemyStore()
    store.init_db(read_auth_config().database_uri)
    print(f"MLflow user {username}: {ensure_user(store, username, login_pw)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
