"""Who may call: API keys (hashed at rest, scoped read or write), optional JWTs, and the
per-key rate limit.

A key looks like ``spk_<prefix>_<secret>``. The prefix finds the row; the secret is
compared as a SHA-256 digest in constant time (keys are 256-bit random, so a fast hash is
the right one). Verified keys are cached for ``SPARK_AUTH_CACHE_S`` seconds, which bounds
how long a revoked key keeps working.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import text

from spark_grpc.db.session import Database
from spark_grpc.errors import PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError

logger = logging.getLogger(__name__)

KEY_PREFIX = "spk"
_LAST_USED_EVERY = timedelta(minutes=1)


class Scope(StrEnum):
    """What a key may do."""

    READ = "read"  # Get*, List*, Watch*, Preview*
    WRITE = "write"  # everything


_READ_VERBS = ("Get", "List", "Watch", "Preview")


def required_scope(method: str) -> Scope:
    """The scope a full method name (``/spark.v1.TaskService/GetTask``) needs."""
    name = method.rsplit("/", 1)[-1]
    return Scope.READ if name.startswith(_READ_VERBS) else Scope.WRITE


@dataclass(frozen=True)
class Principal:
    """A verified caller."""

    key_id: str
    name: str
    scope: Scope

    def allows(self, needed: Scope) -> bool:
        """Whether this caller may do what needs ``needed``."""
        return self.scope == Scope.WRITE or needed == Scope.READ


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_key() -> tuple[str, str, bytes]:
    """A new key: (the key to show once, its prefix, the hash to store)."""
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"{KEY_PREFIX}_{prefix}_{secret}", prefix, _digest(secret)


def _split(key: str) -> tuple[str, str] | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


async def create_key(db: Database, name: str, scope: Scope) -> tuple[str, uuid.UUID]:
    """Stores a new key; returns the key (never stored) and its id."""
    key, prefix, digest = new_key()
    key_id = uuid.uuid4()
    async with db.session() as session:
        await session.execute(
            text(
                "INSERT INTO api_keys (id, prefix, secret_hash, name, scope) "
                "VALUES (:id, :prefix, :hash, :name, :scope)"
            ),
            {"id": key_id, "prefix": prefix, "hash": digest, "name": name, "scope": scope.value},
        )
    return key, key_id


async def list_keys(db: Database) -> list[Any]:
    """Every key, without secrets."""
    async with db.session() as session:
        return list(
            (
                await session.execute(
                    text(
                        "SELECT id, prefix, name, scope, create_time, last_used_time, revoke_time "
                        "FROM api_keys ORDER BY create_time"
                    )
                )
            ).all()
        )


async def revoke_key(db: Database, key_id_or_prefix: str) -> bool:
    """Revokes a key by id or prefix; False when no live key matches."""
    async with db.session() as session:
        row = (
            await session.execute(
                text(
                    "UPDATE api_keys SET revoke_time = clock_timestamp() WHERE revoke_time IS NULL "
                    "AND (prefix = :v OR CAST(id AS text) = :v) RETURNING id"
                ),
                {"v": key_id_or_prefix},
            )
        ).one_or_none()
    return row is not None


class KeyVerifier:
    """Checks presented keys against the table, with a short cache."""

    def __init__(self, db: Database, cache_s: float) -> None:
        self._db = db
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._last_used: dict[str, datetime] = {}

    async def verify(self, key: str) -> Principal:
        """The caller a key names, or UnauthenticatedError."""
        parts = _split(key)
        if parts is None:
            raise UnauthenticatedError("the API key is malformed; keys look like spk_xxxx_yyyy")
        prefix, secret = parts
        digest = _digest(secret)
        cache_key = hashlib.sha256(key.encode()).hexdigest()
        cached = self._cache.get(cache_key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._cache_s:
            principal = cached[1]
        else:
            principal = await self._lookup(prefix, digest)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[cache_key] = (now, principal)
        if principal is None:
            raise UnauthenticatedError("the API key is not valid (unknown or revoked)")
        await self._touch(principal)
        return principal

    async def _lookup(self, prefix: str, digest: bytes) -> Principal | None:
        async with self._db.session() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT id, name, scope, secret_hash FROM api_keys "
                        "WHERE prefix = :prefix AND revoke_time IS NULL"
                    ),
                    {"prefix": prefix},
                )
            ).one_or_none()
        if row is None or not hmac.compare_digest(bytes(row.secret_hash), digest):
            return None
        return Principal(key_id=str(row.id), name=row.name, scope=Scope(row.scope))

    async def _touch(self, principal: Principal) -> None:
        """Records last use, at most once a minute per key (no write per RPC)."""
        now = datetime.now(UTC)
        last = self._last_used.get(principal.key_id)
        if last is not None and now - last < _LAST_USED_EVERY:
            return
        self._last_used[principal.key_id] = now
        try:
            async with self._db.session() as session:
                await session.execute(
                    text("UPDATE api_keys SET last_used_time = :t WHERE id = :id"),
                    {"t": now, "id": uuid.UUID(principal.key_id)},
                )
        except Exception:  # bookkeeping only; never fail the call for it
            logger.warning("could not record the last use of key %s", principal.key_id)


class JwtVerifier:
    """Bearer JWTs signed by a configured public key (RS256 / ES256), scopes in a claim."""

    def __init__(self, public_key_pem: str, audience: str, issuer: str, scope_claim: str) -> None:
        self._key = public_key_pem
        self._audience = audience or None
        self._issuer = issuer or None
        self._claim = scope_claim

    def verify(self, token: str) -> Principal:
        """The caller a token names, or UnauthenticatedError."""
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["RS256", "ES256"],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp"]},
            )
        except jwt.PyJWTError as err:
            raise UnauthenticatedError(f"the bearer token is not valid: {err}") from None
        raw = claims.get(self._claim, "")
        scopes = set(raw.split() if isinstance(raw, str) else raw)
        if "spark.write" in scopes:
            scope = Scope.WRITE
        elif "spark.read" in scopes:
            scope = Scope.READ
        else:
            raise PermissionDeniedError(
                f"the token's {self._claim!r} claim grants neither spark.read nor spark.write"
            )
        return Principal(
            key_id=f"jwt:{claims.get('sub', '?')}", name=str(claims.get("sub", "")), scope=scope
        )


class RateLimiter:
    """A token bucket per caller: ``rate`` calls per second, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, caller: str) -> None:
        """Spends one token, or raises ResourceExhaustedError with the wait."""
        if self._rate <= 0:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(caller, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1:
            self._buckets[caller] = (tokens, now)
            wait = (1 - tokens) / self._rate
            raise ResourceExhaustedError(
                f"rate limit of {self._rate:g} calls/s exceeded; retry in {wait:.2f} s",
                retry_after_s=wait,
                reason="RATE_LIMITED",
            )
        self._buckets[caller] = (tokens - 1, now)


class Authorizer:
    """Decides, per RPC, whether the caller may make it (run by the error boundary)."""

    def __init__(
        self,
        *,
        mode: str,
        keys: KeyVerifier,
        jwt: JwtVerifier | None,
        limiter: RateLimiter,
        reflection_public: bool,
    ) -> None:
        self._mode = mode
        self._keys = keys
        self._jwt = jwt
        self._limiter = limiter
        self._reflection_public = reflection_public

    async def check(self, method: str, metadata: Any, peer: str) -> Principal | None:
        """The verified caller (None where no key is needed), or an auth error."""
        if method.startswith("/grpc.health.v1.Health/"):
            return None
        reflection = method.startswith("/grpc.reflection.")
        if reflection and self._reflection_public:
            return None
        if self._mode == "open":
            return None  # loopback only, and said loudly at start-up
        token = _token(metadata)
        if not token:
            raise UnauthenticatedError(
                "missing credentials: send metadata 'authorization: Bearer <API key>' "
                "(or 'x-api-key: <API key>'); create a key with `spark-grpc keys create`",
                reason="MISSING_CREDENTIALS",
            )
        if self._jwt is not None and token.count(".") == 2:
            principal = self._jwt.verify(token)
        else:
            principal = await self._keys.verify(token)
        needed = Scope.READ if reflection else required_scope(method)
        if not principal.allows(needed):
            raise PermissionDeniedError(
                f"credentials {principal.name!r} have scope {principal.scope}; "
                f"{method.rsplit('/', 1)[-1]} needs {needed}",
                reason="INSUFFICIENT_SCOPE",
                metadata={"required_scope": needed.value},
            )
        self._limiter.take(principal.key_id)
        return principal


def _token(metadata: Any) -> str:
    for key, value in metadata or ():
        if not isinstance(value, str):
            continue
        if key == "authorization" and value[:7].lower() == "bearer ":
            return value[7:].strip()
        if key == "x-api-key":
            return value.strip()
    return ""
