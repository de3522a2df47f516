"""One error tree for trafficd, mapped to exit codes and messages once (in `trafficd.cli`).

    TrafficdError                 exit 1   something trafficd could not do (the message says what)
    │     SseError (a worker's stream broke the protocol), TimelineError (a bad `simulate` input line)
    ├── ConfigError               exit 78  EX_CONFIG: the configuration cannot work; retrying will not help
    │     PolicyError, SecretError, StoreConfigError, ProbeConfigError, AgentConfigError, PreflightError
    ├── TransientError            exit 75  EX_TEMPFAIL: a dependency is unreachable now; retry later
    │     DiscoveryError
    ├── RefusedError              exit 1   a request was refused (a guard, Route 53 rejecting a batch)
    │     Route53Error
    └── UsageError                exit 2   the command line names what the policy does not have

A daemon exits 78 for a ConfigError before it signals READY, and systemd does not restart it
(`RestartPreventExitStatus=78`). Errors of the client libraries (redis-py, botocore, the OS) are classified by
`classify()` without importing those libraries: a command needs no `except RedisError` of its own.

Standard library only: the pure core may import this module.
"""

from __future__ import annotations

import sys

EX_OK = 0
EX_FAILURE = 1
EX_USAGE = 2
EX_TEMPFAIL = 75
EX_CONFIG = 78


class TrafficdError(Exception):
    """Base of every error trafficd raises on purpose. Its message is meant for the operator (no traceback)."""

    exit_code = EX_FAILURE


class ConfigError(TrafficdError):
    """The configuration cannot work (bad policy, missing secret, no AWS credentials): fix it, then start."""

    exit_code = EX_CONFIG


class TransientError(TrafficdError):
    """A dependency cannot be reached now (Redis down, DNS timeout): the same command may work later."""

    exit_code = EX_TEMPFAIL


class RefusedError(TrafficdError):
    """The request was understood and refused (a guard forbids it, Route 53 rejected the batch)."""

    exit_code = EX_FAILURE


class UsageError(TrafficdError):
    """A command line that names something the policy does not have (exit 2, like argparse's own errors)."""

    exit_code = EX_USAGE


# Codes of AWS errors that mean "the configuration is wrong" rather than "try again".
_AWS_CONFIG_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "NoSuchHostedZone", "InvalidClientTokenId", "SignatureDoesNotMatch"}
)
_AWS_TRANSIENT_CODES = frozenset(
    {"Throttling", "ThrottlingException", "PriorRequestNotComplete", "ServiceUnavailable", "InternalError"}
)

_BOTO_TRANSIENT = ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError")


def _isinstance_of(exc: BaseException, module: str, names: tuple[str, ...]) -> bool:
    """isinstance(exc, module.name) for a library that is already imported (never imports it)."""
    mod = sys.modules.get(module)
    if mod is None:
        return False
    classes = tuple(c for c in (getattr(mod, n, None) for n in names) if isinstance(c, type))
    return bool(classes) and isinstance(exc, classes)


def classify(exc: BaseException) -> int | None:
    """The exit code for an error an operator can act on; None for an unexpected one (a bug: show the traceback)."""
    if isinstance(exc, TrafficdError):
        return exc.exit_code
    if _isinstance_of(exc, "redis.exceptions", ("AuthenticationError", "AuthenticationWrongNumberOfArgsError")):
        return EX_CONFIG
    if _isinstance_of(exc, "redis.exceptions", ("NoPermissionError",)):
        return EX_CONFIG
    if _isinstance_of(exc, "redis.exceptions", ("RedisError",)):
        return EX_TEMPFAIL
    if _isinstance_of(exc, "botocore.exceptions", ("NoCredentialsError", "PartialCredentialsError", "NoRegionError")):
        return EX_CONFIG
    if _isinstance_of(exc, "botocore.exceptions", ("ClientError",)):
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in _AWS_CONFIG_CODES:
            return EX_CONFIG
        return EX_TEMPFAIL if code in _AWS_TRANSIENT_CODES else EX_FAILURE
    if _isinstance_of(
        exc, "botocore.exceptions", ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError")
    ):
        return EX_TEMPFAIL
    if isinstance(exc, ConnectionError | TimeoutError):
        return EX_TEMPFAIL
    if isinstance(exc, OSError):
        return EX_FAILURE
    return None


def message(exc: BaseException) -> str:
    """What the operator reads: the message, with the kind of problem when the message alone does not say it."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, TrafficdError):
        return text
    code = classify(exc)
    kind = {EX_CONFIG: "configuration", EX_TEMPFAIL: "unreachable, try again later"}.get(code or 0, "failed")
    return f"{type(exc).__name__} ({kind}): {text}"
