"""The one network boundary of the STAC source: item searches, Planetary Computer's SAS
tokens and windowed reads of cloud-optimized GeoTIFFs, each retried with backoff on 5xx and
timeouts. A failure the user must act on is one line naming the API, collection or asset.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable, TypeVar

from gee_export.common.errors import InputNotFoundError, ServiceError

T = TypeVar("T")
SEARCH_PAGE = 100  # items per page asked of the API (both providers allow more)
TOKEN_MARGIN_S = 300  # a SAS token is renewed this long before its stated expiry


@dataclass(frozen=True)
class NetConfig:
    retries: int = 5  # tries after the first, on 5xx, 429 and timeouts
    backoff_s: float = 0.5  # wait before the first retry; doubles each time (0.5 ... 8 s)
    timeout_s: float = 30.0  # per HTTP request (searches, tokens, COG range reads)


class Transient(Exception):
    """A failure worth retrying: 5xx, 429, a timeout, a dropped connection."""


class Expired(Exception):
    """A signed URL refused (403): the token is renewed, then the read retried."""


def with_retries(fn: Callable[[int], T], what: str, net: NetConfig,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """fn(attempt) until it returns; Transient and Expired are retried after an exponential
    backoff, up to net.retries times, then reported as one ServiceError naming `what`."""
    for attempt in range(net.retries + 1):
        try:
            return fn(attempt)
        except (Transient, Expired) as e:
            if attempt == net.retries:
                raise ServiceError(f"{what}: {e} (gave up after {net.retries + 1} tries)"
                                   ) from None
            sleep(net.backoff_s * 2 ** attempt)
    raise AssertionError("unreachable")


# -- searches ---------------------------------------------------------------------------------


def search_items(api: str, collection: str, bbox: tuple[float, float, float, float],
                 dates: tuple[str, str] | None, query: dict | None, net: NetConfig) -> list[dict]:
    """Every item of `collection` at `api` that intersects `bbox` (lon/lat), acquired in
    `dates` (ISO, end exclusive), matching `query` (STAC query extension); all pages."""
    def run(_attempt: int) -> list[dict]:
        from pystac_client import Client
        from pystac_client.stac_api_io import StacApiIO

        try:
            client = Client.open(api, stac_io=StacApiIO(timeout=net.timeout_s, max_retries=0),
                                 timeout=net.timeout_s)
            found = client.search(collections=[collection], bbox=list(bbox),
                                  datetime=_interval(dates) if dates else None, query=query,
                                  limit=SEARCH_PAGE)
            return list(found.items_as_dicts())
        except Exception as e:
            raise _classified(e, f"{api}") from None
    return with_retries(run, f"search of {collection} at {api}", net)


def _interval(dates: tuple[str, str]) -> str:
    """An end-exclusive ISO date window as STAC's inclusive datetime interval."""
    end = date.fromisoformat(dates[1]) - timedelta(days=1)
    return f"{dates[0]}T00:00:00Z/{end.isoformat()}T23:59:59.999Z"


def _classified(e: Exception, where: str) -> Exception:
    """A search or token failure as Transient (retried) or a one-line ServiceError."""
    import requests
    from pystac_client.exceptions import APIError

    status = getattr(e, "status_code", None)
    # pystac-client wraps a failed request (a timeout, a dropped connection) in an APIError
    # without a status; the request's own exception is its context
    cause = e.__context__ if isinstance(e, APIError) and status is None else e
    if isinstance(cause, (requests.Timeout, requests.ConnectionError)):
        return Transient(f"{type(cause).__name__} ({str(cause).splitlines()[0][:160]})")
    if isinstance(e, APIError) and status is not None and (status >= 500 or status == 429):
        return Transient(f"HTTP {status}")
    if isinstance(e, APIError):
        return ServiceError(f"{where}: HTTP {status}: {str(e).splitlines()[0][:200]}")
    return e


# -- Planetary Computer's SAS tokens ----------------------------------------------------------


class Signer:
    """Planetary Computer's signing (its SDK's logic, without the SDK): one read token per
    collection from the SAS endpoint, appended to the asset URL and reused until shortly
    before it expires; renew=True fetches a new one (after a 403)."""

    def __init__(self, net: NetConfig):
        self.net = net
        self._tokens: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()

    def sign(self, href: str, sas: str, collection: str, renew: bool = False) -> str:
        url = f"{sas.rstrip('/')}/{collection}"
        with self._lock:
            held = self._tokens.get(url)
            now = datetime.now(timezone.utc)
            if renew or held is None or (held[1] - now).total_seconds() < TOKEN_MARGIN_S:
                held = self._tokens[url] = self._fetch(url)
        return f"{href}{'&' if '?' in href else '?'}{held[0]}"

    def _fetch(self, url: str) -> tuple[str, datetime]:
        import requests

        def run(_attempt: int) -> tuple[str, datetime]:
            try:
                r = requests.get(url, timeout=self.net.timeout_s)
            except (requests.Timeout, requests.ConnectionError) as e:
                raise _classified(e, url) from None
            if r.status_code >= 500 or r.status_code == 429:
                raise Transient(f"HTTP {r.status_code}")
            if r.status_code != 200:
                raise ServiceError(f"SAS token {url}: HTTP {r.status_code}")
            body = r.json()
            expiry = datetime.fromisoformat(body["msft:expiry"].replace("Z", "+00:00"))
            return body["token"], expiry
        return with_retries(run, f"SAS token {url}", self.net)


# -- COG reads ----------------------------------------------------------------------------------

_HTTP = re.compile(r"HTTP (?:response )?code[^0-9]*(\d{3})|HTTP error code\s*:?\s*(\d{3})")
_TIMEOUT = re.compile(r"timed? ?out|Timeout was reached", re.I)


def gdal_http_env(net: NetConfig) -> dict:
    """GDAL's HTTP settings for COG reads: our retries are the only ones (GDAL's own are off),
    a request times out after net.timeout_s, and no directory listing is asked for."""
    return {"GDAL_HTTP_MAX_RETRY": "0", "GDAL_HTTP_TIMEOUT": str(max(1, int(net.timeout_s))),
            "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
            "CPL_VSIL_CURL_USE_HEAD": "NO"}


def read_failure(e: Exception, href: str) -> Exception:
    """A failed open or read of `href` (its unsigned URL) as Expired (403), Transient (5xx,
    429, a timeout or any other read failure, worth another try) or, for a 404, one line."""
    msg = " ".join(str(e).split())
    m = _HTTP.search(msg)
    code = int(m.group(1) or m.group(2)) if m else None
    if code == 403:
        return Expired("HTTP 403 (signature refused or expired)")
    if code == 404 or "No such file" in msg or "does not exist" in msg:
        return InputNotFoundError(f"asset {href}: not found (HTTP 404)")
    if _TIMEOUT.search(msg):
        return Transient("timed out")
    return Transient(f"HTTP {code}" if code else msg[:200])
