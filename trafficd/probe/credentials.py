"""The workers' API key: read from an environment variable or a (systemd) credential file named in the policy.

The policy only names where the key lives (`probe.auth.api_key_env` or `probe.auth.api_key_file`); the key itself
never appears in the policy, argv, logs, output, `repr` or error messages. `Secret` wraps the value: its `str`,
`repr` and format show `***`; only `reveal()` returns it, and only the probe's request headers call that.

A relative `api_key_file` is looked up in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`) when it is set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from trafficd.errors import ConfigError
from trafficd.policy.load import unsafe_mode
from trafficd.policy.schema import Auth

MASK = "***"


class SecretError(ConfigError):
    """The API key could not be read. The message names the source, never the value."""


class Secret:
    """A string that does not show itself: `str`, `repr` and f-strings print `***`."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def redact(self, text: str) -> str:
        """`text` with every occurrence of the value replaced by `***` (defence in depth for error details)."""
        return text.replace(self._value, MASK) if self._value else text


def _credential_path(name: str, environ: Mapping[str, str]) -> Path:
    p = Path(name)
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    if not p.is_absolute() and cred_dir:
        return Path(cred_dir) / p
    return p


def load_api_key(auth: Auth, environ: Mapping[str, str] | None = None) -> Secret | None:
    """The API key named by the policy, or None when the policy names none (workers without auth).

    Raises `SecretError` when a named source is missing, unreadable or empty.
    """
    env = os.environ if environ is None else environ
    if auth.api_key_env:
        value = env.get(auth.api_key_env)
        if value is None:
            raise SecretError(f"environment variable {auth.api_key_env} (probe.auth.api_key_env) is not set")
        value = value.strip()
        if not value:
            raise SecretError(f"environment variable {auth.api_key_env} (probe.auth.api_key_env) is empty")
        return Secret(value)
    if auth.api_key_file:
        path = _credential_path(auth.api_key_file, env)
        try:
            unsafe = unsafe_mode(str(path), path.stat().st_mode, "API key file (probe.auth.api_key_file)")
            if unsafe:
                raise SecretError(unsafe)
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(
                f"cannot read the API key file {path} (probe.auth.api_key_file): {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise SecretError(f"the API key file {path} (probe.auth.api_key_file) is not UTF-8 text") from None
        if not value:
            raise SecretError(f"the API key file {path} (probe.auth.api_key_file) is empty")
        return Secret(value)
    return None


def auth_headers(
    auth: Auth, secret: Secret | None, default: tuple[str, str] = ("Authorization", "Bearer")
) -> dict[str, str]:
    """The request header carrying the key; empty without a key.

    `default` is the API's (header, scheme): `Authorization: Bearer …` for the OpenAI APIs, `x-api-key: …` for
    Anthropic's; `probe.auth.header` / `scheme` replace them when set (`scheme: ""` sends the bare key).
    """
    if secret is None:
        return {}
    header = auth.header if auth.header is not None else default[0]
    scheme = auth.scheme if auth.scheme is not None else default[1]
    value = f"{scheme} {secret.reveal()}" if scheme else secret.reveal()
    return {header: value}
