"""API keys at the server's edge: who is calling, which tenant they may see, and how often.

Keys are created with ``llmpulse keys create --tenant T`` and kept (as SHA-256 hashes) in the store,
see `llmpulse.store.ApiKeys`. The server **requires keys once any non-revoked key exists**:

* At startup it asks the store. While no key is configured it asks again every
  `ServerSettings.key_cache_s` seconds (default 5), so a key created while it runs (by the CLI, from
  another process) is enforced within that time; a request that presents a valid key turns
  enforcement on at once. Once on, it stays on until the server restarts, even if every key is
  revoked (revoking the last key locks the API instead of opening it).
* A presented key is looked up in the store on a worker thread the first time; the answer (found or
  not) is cached for `key_cache_s`, so a revoked key stops working within that time and a new key
  works at once.

With keys configured, every path under ``/v1/`` needs ``Authorization: Bearer <key>`` (401 with
``WWW-Authenticate: Bearer`` otherwise), and ``/metrics`` too unless `ServerSettings.metrics_public`.
``/health``, ``/openapi.json``, ``/docs``, the dashboard's page at ``/`` and ``/static/*`` never do.
The key's tenant is put in the request's scope (`principal`): ingest rewrites every event's tenant to
it, and queries read only it (`scoped_tenant`).

Rate limit: each key has a token bucket (`RequestLimits.rate_limit_per_s`, `rate_limit_burst`); a
request over it is answered 429 with ``Retry-After``. Requests without a valid key share a bucket per
client IP when keys are configured (slowing down key guessing) or when the server listens beyond
loopback without keys (``--insecure``); on loopback without keys nothing is limited.

Everything here runs on the event loop; store calls go to a worker thread.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from llmpulse.server._errors import ApiError, error_response, retry_after_header
from llmpulse.server._limits import RateLimiter, RequestLimits
from llmpulse.store import StoreError

if TYPE_CHECKING:
    from llmpulse.store import Store

_log = logging.getLogger("llmpulse.server.auth")

#: Key in the ASGI scope's ``state`` under which the caller's `Principal` (or None) is kept.
PRINCIPAL_KEY: Final = "llmpulse_principal"
#: Longest Authorization value looked at; anything longer is not a key (keys are 46 characters).
MAX_KEY_LENGTH: Final = 256
#: Most lookups cached (found and not found); the cache is emptied when it grows past this.
MAX_CACHED_KEYS: Final = 10_000
#: ``last_used_at`` of a key is written at most this often (seconds).
LAST_USED_EVERY_S: Final = 60.0
#: The one path the in-process demo's token (`Gate.demo_token`) is accepted on.
DEMO_PATH: Final = "/v1/events"
#: The ``WWW-Authenticate`` header of every 401 (RFC 6750).
CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="llmpulse"'}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who sent a request: the API key's public id and the tenant it belongs to."""

    key_id: str
    tenant_id: str


def principal(request: Request) -> Principal | None:
    """The caller's `Principal`, or None when the server requires no keys. Does not block."""
    state = request.scope.get("state")
    found = state.get(PRINCIPAL_KEY) if isinstance(state, dict) else None
    return found if isinstance(found, Principal) else None


def scoped_tenant(request: Request, tenant_id: str | None) -> str:
    """The tenant a query may read: `tenant_id` checked against the caller's key. Does not block.

    With keys configured, a missing or empty `tenant_id` means the key's tenant, and any other tenant
    is refused with `ApiError` 403. Without keys, `tenant_id` is required (`ApiError` 400 otherwise).
    Call it first thing in every endpoint that reads a tenant's data::

        tenant = scoped_tenant(request, tenant_id)
    """
    caller = principal(request)
    if caller is None:
        if not tenant_id:
            raise ApiError(400, "tenant_id is required")
        return tenant_id
    if tenant_id and tenant_id != caller.tenant_id:
        raise ApiError(403, f"this API key belongs to another tenant than {tenant_id!r}")
    return caller.tenant_id


def scoped_tenant_or_all(request: Request, tenant_id: str | None) -> str | None:
    """Like `scoped_tenant`, for reads that may span every tenant: None means every tenant.

    Without keys, a missing or empty `tenant_id` is None (every tenant); with keys it is the key's
    tenant, and another tenant is refused with `ApiError` 403 (a key never reads every tenant).
    Does not block.
    """
    if principal(request) is None:
        return tenant_id or None
    return scoped_tenant(request, tenant_id)


def is_loopback(host: str) -> bool:
    """True when `host` (an address or ``localhost``) only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # "", "0.0.0.0" is handled above; a host name may resolve to anything


def requires_key(path: str, metrics_public: bool) -> bool:
    """True for the paths a key protects (``/v1/...``, and ``/metrics`` unless public)."""
    if path.startswith("/v1/") or path == "/v1":
        return True
    return path == "/metrics" and not metrics_public


def _authorization(scope: Scope) -> bytes | None:
    """The request's Authorization header, None when absent."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bytes(value)
    return None


def _bearer(value: bytes | None) -> str | None:
    """The bearer token of an Authorization value; "" when malformed, None when absent."""
    if value is None:
        return None
    if len(value) > MAX_KEY_LENGTH + 16:
        return ""
    scheme, _, token = value.decode("latin-1").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class Unauthorized(ApiError):
    """401 with ``WWW-Authenticate: Bearer``."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message, headers=CHALLENGE)


class Gate:
    """Authentication and rate limiting of every HTTP request, run by the app before routing.

    `open` (at startup) reads whether keys are configured; `maintain` runs while the server does
    (re-checking that while it is not, and writing keys' last use); `check` answers a request that
    must be refused, or lets it through with its `Principal` in the scope.
    """

    def __init__(
        self,
        limits: RequestLimits,
        *,
        key_cache_s: float,
        metrics_public: bool,
        loopback: bool,
    ) -> None:
        """Gate with the given limits; keys are unknown until `open`. Does not block."""
        self._cache_s = key_cache_s
        self._metrics_public = metrics_public
        self._loopback = loopback
        self._limiter = RateLimiter(limits.rate_limit_per_s, limits.rate_limit_burst)
        self._store: Store | None = None
        self._keys_required = False
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._used: dict[str, float] = {}
        self._written: dict[str, float] = {}
        self.unauthorized = 0
        self.rate_limited = 0
        self._demo_token: str | None = None

    def demo_token(self) -> str:
        """The bearer token of this process's own demo traffic (``serve --demo``), made on first use.

        Random, held only in memory and never shown: it lets the demo post to `DEMO_PATH` when API
        keys are configured, as a caller without a key (events keep their tenants, no rate limit).
        It is accepted nowhere else. Does not block.
        """
        if self._demo_token is None:
            self._demo_token = secrets.token_urlsafe(32)
        return self._demo_token

    def _is_demo(self, scope: Scope) -> bool:
        expected = self._demo_token
        if expected is None or scope.get("path") != DEMO_PATH:
            return False
        token = _bearer(_authorization(scope))
        return token is not None and hmac.compare_digest(token.encode(), expected.encode())

    @property
    def keys_required(self) -> bool:
        """True once any non-revoked key exists (then it stays true until restart)."""
        return self._keys_required

    async def open(self, store: Store) -> None:
        """Start checking keys against `store`. Blocks a worker thread briefly (one query)."""
        self._store = store
        self._keys_required = await to_thread.run_sync(store.keys.any_active)

    async def maintain(self) -> None:
        """Until cancelled: every `key_cache_s`, see whether keys appeared and record keys' last use.

        Store errors are logged and retried at the next round; the last use is written once more on
        cancellation (shutdown).
        """
        try:
            while True:
                await asyncio.sleep(self._cache_s)
                await self._refresh()
        finally:
            await asyncio.shield(self._flush_used())

    async def _refresh(self) -> None:
        store = self._store
        if store is None:
            return
        try:
            if not self._keys_required and await to_thread.run_sync(store.keys.any_active):
                _log.info("API keys are configured: requests need a key from now on")
                self._keys_required = True
        except StoreError as exc:
            _log.warning("could not check for API keys: %s", exc)
        await self._flush_used()

    async def _flush_used(self) -> None:
        store, used = self._store, self._used
        if store is None or not used:
            return
        self._used = {}
        try:
            await to_thread.run_sync(store.keys.mark_used, used)
        except StoreError as exc:
            _log.warning("could not record API keys' last use: %s", exc)

    async def check(self, scope: Scope) -> Response | None:
        """The refusal for this request (401, 429, 503), or None after putting its `Principal` (or
        None) in ``scope["state"]``. Looks up an uncached key in the store on a worker thread."""
        path: str = scope.get("path", "")
        if not requires_key(path, self._metrics_public):
            return None
        if self._store is None:  # before the lifespan opened the store nothing is known: fail closed
            return error_response(503, "the server is starting", headers=retry_after_header(1))
        if b"%00" in scope.get("query_string", b""):  # Postgres cannot compare with a NUL character
            return error_response(422, "query parameters may not contain a NUL character (%00)")
        if self._is_demo(scope):  # the in-process demo (`demo_token`)
            scope.setdefault("state", {})[PRINCIPAL_KEY] = None
            return None
        try:
            caller = await self.authorize(_authorization(scope), _client(scope))
        except ApiError as exc:
            return error_response(exc.status, exc.message, headers=exc.headers)
        scope.setdefault("state", {})[PRINCIPAL_KEY] = caller
        return None

    async def authorize(self, authorization: bytes | None, client: str) -> Principal | None:
        """The caller of a request to a protected endpoint, from its Authorization value (None when
        absent) and its client address; raises `ApiError` 401, 429 (``Retry-After``) or 503.

        The one key and rate-limit check of every transport: `check` calls it for HTTP, the OTLP/gRPC
        receiver for its ``authorization`` metadata. Looks up an uncached key on a worker thread;
        call it on the event loop.
        """
        if self._store is None:  # before the lifespan opened the store nothing is known: fail closed
            raise ApiError(503, "the server is starting", headers=retry_after_header(1))
        try:
            caller = await self._authenticate(authorization)
        except ApiError as exc:
            if exc.status == 401:
                self.unauthorized += 1
                self._limit(("ip", client))
            raise
        if caller is not None:
            self._limit(("key", caller.key_id))
        elif self._keys_required or not self._loopback:
            self._limit(("ip", client))
        return caller

    def _limit(self, bucket: object) -> None:
        """Take a token of `bucket`'s rate limit; `ApiError` 429 with ``Retry-After`` when over it."""
        wait = self._limiter.take(bucket)
        if wait is None:
            return
        self.rate_limited += 1
        raise ApiError(
            429,
            "too many requests: over the rate limit (rate_limit_per_s, rate_limit_burst)",
            headers=retry_after_header(wait),
        )

    async def _authenticate(self, authorization: bytes | None) -> Principal | None:
        token = _bearer(authorization)
        if token is None:
            if self._keys_required:
                raise Unauthorized("an API key is required: send `Authorization: Bearer <key>`")
            return None
        if not token or len(token) > MAX_KEY_LENGTH:
            if self._keys_required:
                raise Unauthorized("the Authorization header must be `Bearer <key>`")
            return None
        caller = await self._lookup(token)
        if caller is None:
            if self._keys_required:
                raise Unauthorized("unknown or revoked API key")
            return None  # without keys configured an unknown key changes nothing
        self._keys_required = True
        now = time.time()
        if now - self._written.get(caller.key_id, 0.0) >= LAST_USED_EVERY_S:
            self._written[caller.key_id] = now
            self._used[caller.key_id] = now
        return caller

    async def _lookup(self, token: str) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        store = self._store
        if store is None:
            raise ApiError(503, "the server is starting", headers=retry_after_header(1))
        try:
            found = await to_thread.run_sync(store.keys.lookup, token)
        except StoreError as exc:
            _log.warning("could not look up an API key: %s", exc)  # the details stay in the server's log
            raise ApiError(
                503, "cannot check the API key: the store is unavailable", headers=retry_after_header(1)
            ) from None
        caller = None if found is None or found.revoked else Principal(found.key_id, found.tenant_id)
        if len(self._cache) >= MAX_CACHED_KEYS:
            self._cache.clear()
        self._cache[token] = (caller, now + self._cache_s)
        return caller

    def stats(self) -> Mapping[str, Any]:
        """Figures for /metrics: whether keys are required, refusals so far. Does not block."""
        return {
            "keys_required": self._keys_required,
            "unauthorized": self.unauthorized,
            "rate_limited": self.rate_limited,
        }


_SECURITY_SCHEME: Final = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key from `llmpulse keys create --tenant T`. Required once any key exists.",
}
_REFUSALS: Final[dict[str, dict[str, Any]]] = {
    "401": {
        "description": "Keys are configured and the request has no valid key (`WWW-Authenticate: Bearer`)"
    },
    "403": {"description": "`tenant_id` names another tenant than the API key's"},
    "429": {"description": "Over the rate limit; retry after `Retry-After` seconds"},
}


def document_security(schema: dict[str, Any], metrics_public: bool = False) -> None:
    """Declare the bearer key on every protected operation of an OpenAPI `schema` (in place).

    The requirement is optional (``[{"bearerAuth": []}, {}]``) because a server without keys takes
    none. 401 and 429 are added to each protected operation's answers, 403 to those with a
    ``tenant_id`` parameter.
    """
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = _SECURITY_SCHEME
    for path, operations in schema.get("paths", {}).items():
        if not requires_key(path, metrics_public):
            continue
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            operation["security"] = [{"bearerAuth": []}, {}]
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", _REFUSALS["401"])
            responses.setdefault("429", _REFUSALS["429"])
            params = operation.get("parameters", [])
            if any(isinstance(p, dict) and p.get("name") == "tenant_id" for p in params):
                responses.setdefault("403", _REFUSALS["403"])


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def exposure_problem(host: str, store_url: str) -> str | None:
    """Why the server must not listen on `host` without ``--insecure``, or None. Blocks (opens the store).

    Listening beyond loopback is refused while the store at `store_url` has no API key.
    """
    if is_loopback(host):
        return None
    from llmpulse.store import Store

    with Store.open(store_url) as store:
        if store.keys.any_active():
            return None
    shown = host or "every interface"
    return (
        f"refusing to listen on {shown}: no API key is configured, so anyone who can reach it could "
        "read and write every tenant's data. Create a key (llmpulse keys create --tenant T), listen "
        "on 127.0.0.1, or pass --insecure to serve without keys anyway"
    )
