"""Redis connection for the statistics store: `redis_client(policy.redis)`, the transient error tuple, backoff.

The client returns bytes (`decode_responses=False`): slices are binary BITFIELD strings.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoPermissionError, OutOfMemoryError, ReadOnlyError, RedisError, ResponseError

from trafficd import keys
from trafficd.backoff import Backoff as Backoff
from trafficd.errors import ConfigError
from trafficd.policy.load import unsafe_mode
from trafficd.policy.schema import Policy, Redis

# What a broken or unreachable Redis raises through redis-py (connection refused/reset, timeouts, LOADING, ...).
TRANSIENT = (RedisError, OSError, asyncio.TimeoutError)

# Command errors that pass with time or an operator's fix (a failover, memory, an ACL): the write is retried.
_PASSING = (ReadOnlyError, OutOfMemoryError, NoPermissionError)
_PASSING_CODES = re.compile(
    r"\b(READONLY|OOM|NOPERM|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|BUSY|MISCONF|NOREPLICAS|LOADING)\b"
)


def refused(exc: BaseException) -> bool:
    """Redis refused the command itself (a key of the wrong type, a malformed command): sending it again gets the
    same answer, so retrying it would block every later write. Errors that pass are not refusals."""
    if not isinstance(exc, ResponseError) or isinstance(exc, _PASSING):
        return False
    return _PASSING_CODES.search(str(exc)) is None


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
    if cfg.url.startswith("rediss") and cfg.tls_ca_file:
        kwargs["ssl_ca_certs"] = cfg.tls_ca_file
    scheme = cfg.url.split("://", 1)[0]
    if scheme.endswith("+cluster"):
        return _cluster_client(cfg.url, kwargs)
    if scheme.endswith("+sentinel"):
        return _sentinel_client(cfg.url, kwargs)
    client: aioredis.Redis = aioredis.Redis.from_url(cfg.url, **kwargs)
    return client


def _nodes(url: str) -> tuple[list[tuple[str, int]], list[str]]:
    """`scheme://h1:p1,h2:p2/rest/of/path` → ([(h1, p1), (h2, p2)], ['rest', 'of', 'path'])."""
    netloc, _, path = url.split("://", 1)[1].partition("/")
    hosts = netloc.rpartition("@")[2]
    nodes = []
    for part in hosts.split(","):
        host, _, port = part.rpartition(":")
        nodes.append((host.strip("[]") or part, int(port or 6379)))
    return nodes, [p for p in path.split("/") if p]


def _cluster_client(url: str, kwargs: dict[str, Any]) -> aioredis.Redis:
    """`redis+cluster://h1:p1,h2:p2` (or rediss+cluster): redis-py's RedisCluster, seeded from these nodes.

    Every multi-key command and MULTI/EXEC trafficd sends stays inside one hash slot (keys.py hash tags), which
    is what a cluster requires. RedisCluster offers the same command methods the store, lease and overrides use."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    nodes, _ = _nodes(url)
    if url.startswith("rediss"):
        kwargs["ssl"] = True
    kwargs.pop("retry", None)  # the cluster client retries MOVED/ASK and failovers itself
    cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **kwargs)
    return cast(aioredis.Redis, cluster)


def _sentinel_client(url: str, kwargs: dict[str, Any]) -> aioredis.Redis:
    """`redis+sentinel://s1:p1,s2:p2/<primary name>[/<db>]`: the current primary that the Sentinels name.

    Every command goes to the primary the Sentinels name now; after a failover the next connection finds
    the new one (a command in flight fails as a transient error and the callers' backoff retries it)."""
    from redis.asyncio.sentinel import Sentinel

    nodes, path = _nodes(url)
    if not path:
        raise StoreConfigError(f"redis.url {url!r}: name the primary, e.g. redis+sentinel://host:26379/mymaster")
    if len(path) > 1:
        kwargs["db"] = int(path[1])
    timeouts = {k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout")}
    sentinel = Sentinel(nodes, sentinel_kwargs=timeouts, **kwargs)  # type: ignore[no-untyped-call]
    return cast(aioredis.Redis, sentinel.master_for(path[0]))


def ttl_s(policy: Policy) -> int:
    """Keys live a little longer than the longest window can still read them."""
    w = policy.windows
    return math.ceil(max(w.trip, w.long) + w.max_clock_skew + 2 * w.slice) + 10


def recent_m(policy: Policy) -> int:
    return policy.trip.fast_rule.of_last if policy.trip.fast_rule else 20


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
