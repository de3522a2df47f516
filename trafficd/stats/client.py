"""Redis connection for the statistics store: `redis_client(policy.redis)`, the transient error tuple, backoff.

The client returns bytes (`decode_responses=False`): slices are binary BITFIELD strings.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from trafficd import keys
from trafficd.backoff import Backoff as Backoff
from trafficd.errors import ConfigError
from trafficd.policy.load import unsafe_mode
from trafficd.policy.schema import Policy, Redis

# What a broken or unreachable Redis raises through redis-py (connection refused/reset, timeouts, LOADING, ...).
TRANSIENT = (RedisError, OSError, asyncio.TimeoutError)


class StoreConfigError(ConfigError):
    """The Redis settings cannot be used (e.g. the password file is unreadable). Never carries the secret."""


def _password(cfg: Redis) -> str | None:
    if cfg.password_env:
        value = os.environ.get(cfg.password_env)
        if value is None:
            raise StoreConfigError(f"redis.password_env names {cfg.password_env}, which is not set")
        return value
    if cfg.password_file:
        path = Path(cfg.password_file)
        if not path.is_absolute() and os.environ.get("CREDENTIALS_DIRECTORY"):
            path = Path(os.environ["CREDENTIALS_DIRECTORY"]) / path
        try:
            unsafe = unsafe_mode(str(path), path.stat().st_mode, "password file (redis.password_file)")
            if unsafe:
                raise StoreConfigError(unsafe)
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StoreConfigError(f"cannot read redis.password_file {path}: {exc.strerror}") from None
    return None


def client_for(policy: Policy, role: str, region: str | None = None, *, timeout_s: float = 2.0) -> aioredis.Redis:
    """A client for one role: `agent` (of `region`), `controller` or `oncall`. With `redis.acl_users` it logs in
    as that role's ACL user (keys.acl_username); the password (env/file) is the one this host holds for it."""
    username = keys.acl_username(policy.service, role, region) if policy.redis.acl_users else None
    return redis_client(policy.redis, timeout_s=timeout_s, username=username)


def redis_client(cfg: Redis, *, timeout_s: float = 2.0, username: str | None = None) -> aioredis.Redis:
    """An asyncio client for `cfg.url` (`redis://` or `rediss://`), password from env/file, CA from tls_ca_file.

    One quick retry for a dropped connection; the callers do the real, backed-off retrying.
    """
    kwargs: dict[str, Any] = {
        "decode_responses": False,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=1),
    }
    password = _password(cfg)
    if password is not None:
        kwargs["password"] = password
    if username is not None:
        kwargs["username"] = username
    if cfg.url.startswith("rediss://") and cfg.tls_ca_file:
        kwargs["ssl_ca_certs"] = cfg.tls_ca_file
    client: aioredis.Redis = aioredis.Redis.from_url(cfg.url, **kwargs)
    return client


def ttl_s(policy: Policy) -> int:
    """Keys live a little longer than the longest window can still read them."""
    w = policy.windows
    return math.ceil(max(w.trip, w.long) + w.max_clock_skew + 2 * w.slice) + 10


def recent_m(policy: Policy) -> int:
    return policy.trip.fast_rule.of_last if policy.trip.fast_rule else 20


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
