"""The one network boundary of the Earth Engine export, and the policy for its errors.

`EarthEngineClient` is the only code that talks to Google: computeValue, computePixels, task
start and status, Cloud Storage downloads. Tests put a double in its place that behaves like the
service at its limits. Errors are classified by their HTTP status, or by the service's own
texts when a client raised them without one, never by digits found in a message: 'Total request
size (56623104 bytes) ...' is a request to split, not a 503.
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from gee_export.common.errors import InputError, ServiceError

if TYPE_CHECKING:
    import ee

AUTH_HELP = ("run `earthengine authenticate` (or set GOOGLE_APPLICATION_CREDENTIALS to a "
             "service-account key file), then rerun")

# Deterministic for the request as sent, fine for a smaller one: split or tile, never retry as
# is. The service's texts (seen in the issue trackers of Xee, geemap, rgee, geetools).
TOO_BIG_TEXTS = ("total request size", "request payload size exceeds the limit",
                 "user memory limit exceeded", "computation timed out",
                 "collection query aborted after accumulating over",
                 "too many pixels in the region")
# What the client raises without an HTTP status for a busy or failing service.
TRANSIENT_TEXTS = ("too many requests", "quota exceeded", "rate limit", "resource_exhausted",
                   "resource exhausted", "too many concurrent", "service unavailable",
                   "backend error", "deadline exceeded", "internal error", "try again",
                   "connection reset", "connection aborted", "temporarily")
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)


class EarthEngineClient:
    """The only place that talks to Google. Methods are the calls the export makes."""

    def __init__(self, project: str):
        self.project = project

    @classmethod
    def connect(cls, project: str | None) -> "EarthEngineClient":
        """ee.Initialize with one clear message for a missing project or login."""
        import ee

        project = project or os.environ.get("EE_PROJECT")
        if not project:
            raise InputError("Earth Engine needs a Google Cloud project: give --project ID or "
                             "set EE_PROJECT (the project must have the Earth Engine API "
                             "enabled)")
        try:
            ee.Initialize(project=project)
        except Exception as e:  # ee and google-auth raise many types; none may escape raw
            raise ServiceError(connect_error_message(e, project)) from None
        return cls(project)

    def compute_value(self, obj: ee.ComputedObject) -> Any:
        import ee

        return ee.data.computeValue(obj)

    def compute_pixels(self, params: dict) -> np.ndarray:
        import ee

        return ee.data.computePixels(params)

    def start_task(self, task: ee.batch.Task) -> str:
        task.start()
        return task.id

    def task_status(self, task_ids: list[str]) -> list[dict]:
        import ee

        return ee.data.getTaskStatus(task_ids)

    def download_blob(self, bucket: str, name: str, dest: Path) -> bool:
        """Copy gs://bucket/name to dest; False when the object does not exist."""
        from google.api_core.exceptions import NotFound
        from google.cloud import storage

        blob = storage.Client(project=self.project).bucket(bucket).blob(name)
        try:
            blob.download_to_filename(str(dest))
        except NotFound:
            return False
        return True


def connect_error_message(exc: BaseException, project: str) -> str:
    """The user-facing line for a failed ee.Initialize; never includes tokens or key paths."""
    text = str(exc).lower()
    auth_words = ("authorize", "authenticate", "credential", "refresh", "invalid_grant",
                  "expired", "token", "unauthenticated", "permission")
    if any(w in text for w in auth_words) or type(exc).__name__ in (
            "DefaultCredentialsError", "RefreshError"):
        return f"Earth Engine login is missing or expired: {AUTH_HELP}"
    if "not found" in text or "not registered" in text or "disabled" in text:
        return (f"Earth Engine project {project!r} cannot be used (not found, not registered "
                "for Earth Engine, or the API is disabled); check --project / EE_PROJECT")
    return f"Earth Engine could not be initialized for project {project!r}: {first_line(exc)}"


# -- the error policy -----------------------------------------------------------------------------

def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an error: ee raises EEException while handling the HttpError
    that carries it, so the status is on the exception's context."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        resp = getattr(e, "resp", None)
        status = getattr(resp, "status", None) or getattr(e, "status_code", None)
        if isinstance(status, int):
            return status
        e = e.__cause__ or e.__context__
    return None


def classify_error(exc: BaseException) -> str:
    """'too_big' (deterministic for that request: make it smaller), 'transient' (retry with
    backoff) or 'fatal' (the same request would fail again: stop and say so)."""
    text = str(exc).lower()
    if any(t in text for t in TOO_BIG_TEXTS):
        return "too_big"
    status = http_status(exc)
    if status is not None:
        return "transient" if status in TRANSIENT_STATUS else "fatal"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "transient"
    if any(t in text for t in TRANSIENT_TEXTS):
        return "transient"
    return "fatal"


def first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else type(e).__name__


class TooBig(Exception):
    """The service answered that this request is too big; a smaller one will do."""

    def __init__(self, cause: BaseException):
        super().__init__(first_line(cause))
        self.cause = cause


@dataclass
class Retry:
    """Calls with retries: transient errors back off exponentially with full jitter, so many
    workers do not retry in step; 'too big' raises TooBig for the caller to split; anything
    else, or retries used up, raises ServiceError naming the step."""
    max_retries: int = 6
    base_delay_s: float = 2.0
    max_delay_s: float = 120.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def call(self, step: str, fn: Callable[..., Any], *args: Any) -> Any:
        for attempt in range(self.max_retries + 1):
            try:
                return fn(*args)
            except Exception as e:  # the ee client raises EEException, HttpError, OSError...
                kind = classify_error(e)
                if kind == "too_big":
                    raise TooBig(e) from None
                if kind == "fatal" or attempt == self.max_retries:
                    why = "gave up after retries: " if kind == "transient" else ""
                    raise ServiceError(f"Earth Engine, {step}: {why}{first_line(e)}") from None
                delay = min(self.max_delay_s, self.base_delay_s * 2 ** attempt)
                self.sleep(self.rng.uniform(delay / 2, delay))
        raise AssertionError("unreachable")
