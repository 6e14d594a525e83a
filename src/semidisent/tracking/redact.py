"""Keep credentials out of everything that is logged.

Credentials reach the project only through the environment (or Kubernetes secrets mapped to
environment variables). They can still leak through values that embed them, such as a
database URL ``postgresql://user:password@host/db`` used as Optuna storage or MLflow backend.
Everything logged as a parameter or tag goes through :func:`redact_value`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/@\s]+)@")
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|token|credential|private|api[_-]?key|access[_-]?key)", re.IGNORECASE
)
# Environment variables whose values must never appear in logs, whatever they are called.
SECRET_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "KFP_TOKEN",
    "PGPASSWORD",
)
MASK = "***"


def secret_values() -> list[str]:
    """Current values of the environment's secret variables (long enough to be meaningful)."""
    values = [os.environ.get(k, "") for k in SECRET_ENV]
    values += [v for k, v in os.environ.items() if _SECRET_KEY.search(k)]
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def redact_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    out = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{MASK}@", value)
    for secret in secret_values():
        out = out.replace(secret, MASK)
    return out


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """Redact every value; values under secret-looking keys are masked entirely."""
    return {
        k: (MASK if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact_value(v))
        for k, v in values.items()
    }
