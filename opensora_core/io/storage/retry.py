"""Retry policy: which failures are transient and exponential backoff around one call."""

from __future__ import annotations

import http.client
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import StorageError, StorageUnavailableError

logger = logging.getLogger(__package__)  # "opensora_core.io.storage", one logger for the package

_TRANSIENT_S3_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "OperationAborted", "Throttling"}
)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: delay after failure n (1-based) is ``min(max, initial * 2**(n-1))``.

    With ``jitter`` the delay is scaled by a random factor in [0.5, 1] so that many clients do not retry
    in lock-step.
    """

    attempts: int = 5
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: bool = True

    def delay(self, failures: int) -> float:
        base = min(self.max_delay_s, self.initial_delay_s * (2 ** max(failures - 1, 0)))
        return base * random.uniform(0.5, 1.0) if self.jitter else base


def _s3_error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else None


def is_transient_error(exc: BaseException) -> bool:
    """True for failures worth retrying: connection errors, timeouts, HTTP 5xx/429 and throttling codes.

    TLS verification failures, bad requests, missing objects and checksum mismatches are not transient.
    """
    if isinstance(exc, StorageUnavailableError):
        return True
    if isinstance(exc, StorageError | ValueError | ssl.SSLError):
        return False
    module = type(exc).__module__
    if module.startswith("urllib3"):
        from urllib3.exceptions import HTTPError, MaxRetryError
        from urllib3.exceptions import SSLError as Urllib3SSLError

        if isinstance(exc, Urllib3SSLError):
            return False
        if isinstance(exc, MaxRetryError):
            return exc.reason is None or is_transient_error(exc.reason)
        return isinstance(exc, HTTPError)
    if module.startswith("minio"):
        from minio.error import InvalidResponseError, S3Error, ServerError

        if isinstance(exc, ServerError):
            return exc.status_code >= 500 or exc.status_code == 429
        if isinstance(exc, InvalidResponseError):
            status = getattr(exc, "_code", 0) or 0
            return status >= 500 or status == 429
        if isinstance(exc, S3Error):
            status = getattr(exc.response, "status", 0) or 0
            return exc.code in _TRANSIENT_S3_CODES or status >= 500 or status == 429
        return False
    return isinstance(exc, ConnectionError | TimeoutError | http.client.IncompleteRead)


def call_with_retries(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    is_transient: Callable[[BaseException], bool] = is_transient_error,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient failures per ``policy``.

    Raises the first non-transient error unchanged, or :class:`StorageUnavailableError` (chained to the last
    transient error) after ``policy.attempts`` failed attempts. ``what`` names the operation in messages.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == policy.attempts:
                raise StorageUnavailableError(
                    f"{what} failed after {attempt} attempt(s): {type(exc).__name__}: {exc}"
                ) from exc
            delay = policy.delay(attempt)
            logger.warning(
                "%s: transient %s (attempt %d/%d), retrying in %.2fs",
                what,
                type(exc).__name__,
                attempt,
                policy.attempts,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable: RetryPolicy.attempts must be >= 1")
