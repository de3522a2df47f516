"""Where a probe goes: a worker URL as users write it, turned into the API's endpoint and model-list URLs.

A worker's `url` may be the server's root (`http://host:8000`), the OpenAI SDK's base URL with the version
(`http://host:8000/v1`, `…/v1/`), or the full endpoint (`…/v1/chat/completions`, or a gateway's
`…/openai/deployments/x/chat/completions`); trailing slashes don't matter and a query string is kept. The API
(`trafficd/probe/apis/`) says what its prefix (`/v1`, `/api`) and endpoint are:

| url ends with | request | model list |
|---|---|---|
| the endpoint (`/chat/completions`) | as given | the part before the endpoint + `/models` |
| the prefix (`/v1`) | + endpoint | + `/models` |
| anything else | + prefix + endpoint | + prefix + `/models` |

With `address`, the connection goes to that IP while TLS and `Host` use the URL's name; `shown` is the URL with
the name (what the user wrote), used in every failure detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import yarl

from trafficd.probe.apis import Dialect


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: yarl.URL  # what aiohttp requests (host replaced by `address` when set)
    shown: str  # the URL with the configured host name, for details
    host_header: str | None = None
    server_name: str | None = None  # TLS SNI / verification name when connecting to an address


def paths(path: str, d: Dialect) -> tuple[str, str | None]:
    """(request path, model-list path or None) for a configured URL path."""
    p = path.rstrip("/")
    if d.is_endpoint(p):
        return p, None if d.models_endpoint is None else p[: -len(d.endpoint)] + d.models_endpoint
    root = p if d.prefix and p.endswith(d.prefix) else p + d.prefix
    return root + d.endpoint, None if d.models_endpoint is None else root + d.models_endpoint


def endpoint(base: str, address: str | None, d: Dialect, *, models: bool = False) -> Endpoint | None:
    """The request (or model-list) endpoint for a worker; None when the API has no model list.

    Raises `ValueError` for a URL that cannot be used (no host, bad port, bad address)."""
    url = yarl.URL(base)
    if not url.host or url.scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL with a host: {base}")
    request_path, models_path = paths(url.path, d)
    path = models_path if models else request_path
    if path is None:
        return None
    url = url.with_path(path).with_query(url.query)
    shown = str(url)
    host_header = server_name = None
    if address:
        host_header = url.host if url.explicit_port is None else f"{url.host}:{url.port}"
        server_name = url.host if url.scheme == "https" else None
        url = url.with_host(address)
        shown = f"{shown} via {address}"
    return Endpoint(url, shown, host_header, server_name)
