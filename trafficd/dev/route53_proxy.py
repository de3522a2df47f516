"""A Route 53 proxy in front of moto server that enforces what Route 53 enforces, records every accepted batch,
and injects faults (tests, the demo stack, the fault suite's auditor).

moto (5.2.5) stores records but does not check what Route 53 checks: a DELETE must match the existing record
exactly, a CREATE must not find one, a batch is all or nothing; moto's DELETE removes every record sharing a
SetIdentifier, and its CREATE after an identical earlier CREATE fails. So the proxy judges every
ChangeResourceRecordSets itself (the rules: `route53_rules.py`), against the zone as moto lists it now, under one
lock:

* DELETE of a record that is absent → InvalidChangeBatch "Tried to delete resource record set [name='…',
  type='…', set-identifier='…'] but it was not found"; with other values (weight, TTL, values, alias, region)
  → "… but the values provided do not match the current values"; CREATE of a record that exists → "Tried to
  create resource record set […] but it already exists". All messages of a batch in one error, in Route 53's
  XML error shape (`ErrorResponse/Error/Code`, `Message` = "[m1, m2]"); nothing of the batch is applied.
* An accepted batch is sent to moto as the net effect per record (UPSERT of what the batch creates, DELETE of
  what it only deletes), so moto's own quirks do not matter; it is recorded in `accepted_batches` with the
  time, the writer (`trafficd-writer/<id>` from the User-Agent), the epoch asserted (the TXT epoch record the
  batch creates) and every change.
* Changes get unique change ids; with `pending_s > 0` a change is PENDING for that long (GetChange answered
  by the proxy), otherwise INSYNC at once.
* Faults: `inject(op, kind, ...)` — `error` (any code/status, e.g. Throttling, AccessDenied, 5xx), `pending`
  (the change stays PENDING until a later fault-free GetChange), `drop_before` / `drop_after` (the connection
  is closed before forwarding / after the batch was applied: outcome unknown); `rate_limit_per_s` answers
  Throttling beyond that many requests per second.

    proxy = Route53Proxy.start(moto_url); url = proxy.url; ...; proxy.stop()
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import traceback
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.sax.saxutils import escape

from trafficd.dev.route53_rules import RecordKey, epochs, judge_batch, parse_rrset, record_key, xml_child, xml_text

NS = "https://route53.amazonaws.com/doc/2013-04-01/"
ERROR_XML = (
    f'<?xml version="1.0"?>\n<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{{code}}</Code>'
    "<Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
)
_WRITER = re.compile(r"trafficd-writer/(\S+)")

# moto server picks the service from the credential scope: the proxy's own calls say "route53"
_MOTO_AUTH = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/route53/aws4_request, "
    "SignedHeaders=host, Signature=0"
}


@dataclass
class Fault:
    op: str  # list | change | get_change
    kind: str  # error | pending | drop_after | drop_before
    times: int = 1  # how many matching requests it applies to (-1: every one)
    status: int = 400
    code: str = ""
    message: str = "injected"


@dataclass(frozen=True)
class AcceptedBatch:
    """One batch the proxy accepted and moto applied."""

    at: float  # time.time() when accepted
    zone_id: str
    change_id: str
    writer: str | None  # from the User-Agent's trafficd-writer/<id>
    epoch: int | None  # the writer epoch the batch creates (asserts or takes)
    epoch_before: int | None  # the epoch the batch deletes (== epoch when asserted, epoch-1 at takeover)
    comment: str
    changes: tuple[tuple[str, dict[str, Any]], ...]  # (action, record fields)


@dataclass
class Route53Proxy:
    upstream: str
    pending_s: float = 0.0
    rate_limit_per_s: float | None = None
    clock: Callable[[], float] = time.monotonic
    faults: list[Fault] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    accepted_batches: list[AcceptedBatch] = field(default_factory=list)
    refused_batches: list[tuple[float, str | None, list[str]]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changes: dict[str, float] = field(default_factory=dict)  # change id → INSYNC at (clock)
    _held: set[str] = field(default_factory=set)  # change ids a `pending` fault keeps PENDING
    _recent: list[float] = field(default_factory=list)

    @classmethod
    def start(cls, upstream: str, **kw: Any) -> Route53Proxy:
        proxy = cls(upstream.rstrip("/"), **kw)
        handler = type("Handler", (_Handler,), {"proxy": proxy})
        proxy._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        proxy._server.daemon_threads = True
        threading.Thread(target=proxy._server.serve_forever, name="route53-proxy", daemon=True).start()
        return proxy

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def inject(self, op: str, kind: str, **kw: Any) -> Fault:
        """Add a fault (see the module docstring); returns it."""
        fault = Fault(op, kind, **kw)
        with self._lock:
            self.faults.append(fault)
        return fault

    def take(self, op: str) -> Fault | None:
        with self._lock:
            self.ops.append(op)
            for f in self.faults:
                if f.op == op:
                    if f.times > 0:
                        f.times -= 1
                        if f.times == 0:
                            self.faults.remove(f)
                    return f
        return None

    def throttled(self) -> bool:
        if self.rate_limit_per_s is None:
            return False
        with self._lock:
            now = self.clock()
            self._recent = [t for t in self._recent if now - t < 1.0] + [now]
            return len(self._recent) > self.rate_limit_per_s

    # ---- upstream (moto)

    def forward(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes, str]:
        headers = {"Content-Type": "text/xml", **headers} if body else headers
        req = urllib.request.Request(self.upstream + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read(), resp.headers.get("Content-Type", "text/xml")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get("Content-Type", "text/xml")

    def zone_now(self, zone_id: str) -> dict[RecordKey, dict[str, Any]]:
        """Every record of the zone as moto lists it (pages followed by name/type; moto has no identifiers)."""
        out: dict[RecordKey, dict[str, Any]] = {}
        query = "maxitems=300"
        seen: set[str] = set()
        while True:
            _, data, _ = self.forward("GET", f"/2013-04-01/hostedzone/{zone_id}/rrset?{query}", None, _MOTO_AUTH)
            root = ET.fromstring(data)
            sets = xml_child(root, "ResourceRecordSets")
            for node in sets if sets is not None else []:
                r = parse_rrset(node)
                out.setdefault(record_key(r), r)
            if xml_text(root, "IsTruncated") != "true":
                return out
            query = f"maxitems=300&name={xml_text(root, 'NextRecordName')}&type={xml_text(root, 'NextRecordType')}"
            if query in seen:
                return out
            seen.add(query)

    def change(self, zone_id: str, body: bytes, user_agent: str) -> tuple[int, bytes]:
        """Judge a batch like Route 53, apply its net effect to moto, record it; (status, XML body)."""
        root = ET.fromstring(body)
        batch = xml_child(root, "ChangeBatch")
        assert batch is not None
        comment = xml_text(batch, "Comment") or ""
        changes = []
        for ch in xml_child(batch, "Changes") or []:
            rrset = xml_child(ch, "ResourceRecordSet")
            assert rrset is not None
            changes.append((xml_text(ch, "Action") or "", parse_rrset(rrset)))
        writer = m.group(1) if (m := _WRITER.search(user_agent)) else None
        with self._lock:
            zone = self.zone_now(zone_id)
            problems = judge_batch(zone, changes)
            if problems:
                self.refused_batches.append((time.time(), writer, problems))
                message = escape("[" + ", ".join(problems) + "]")
                return 400, ERROR_XML.format(code="InvalidChangeBatch", message=message, request_id="proxy").encode()
            status, data = self._apply(zone_id, zone, changes)
            if status != 200:
                return status, data
            change_id = f"C{next(self._ids):013d}"
            self._changes[change_id] = self.clock() + self.pending_s
            created, deleted = epochs(changes)
            fields = tuple((a, {k: v for k, v in r.items() if k != "xml"}) for a, r in changes)
            self.accepted_batches.append(
                AcceptedBatch(time.time(), zone_id, change_id, writer, created, deleted, comment, fields)
            )
        return 200, self.change_info(change_id, "ChangeResourceRecordSetsResponse")

    def _apply(
        self, zone_id: str, zone: dict[RecordKey, dict[str, Any]], changes: list[tuple[str, dict[str, Any]]]
    ) -> tuple[int, bytes]:
        final = dict(zone)
        for action, r in changes:
            if action == "DELETE":
                final.pop(record_key(r), None)
            else:
                final[record_key(r)] = r
        net = [("DELETE", zone[k]["xml"]) for k in zone if k not in final]
        net += [("UPSERT", r["xml"]) for k, r in final.items() if k not in zone or zone[k]["xml"] != r["xml"]]
        if not net:
            return 200, b""
        parts = "".join(f"<Change><Action>{a}</Action>{x}</Change>" for a, x in net)
        xml = (
            f'<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsRequest xmlns="{NS}">'
            f"<ChangeBatch><Changes>{parts}</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
        )
        status, data, _ = self.forward(
            "POST", f"/2013-04-01/hostedzone/{zone_id}/rrset/", xml.encode(), {"Content-Type": "text/xml", **_MOTO_AUTH}
        )
        return status, data

    def change_info(self, change_id: str, root: str) -> bytes:
        insync = change_id not in self._held and self.clock() >= self._changes.get(change_id, 0.0)
        status = "INSYNC" if insync else "PENDING"
        return (
            f'<?xml version="1.0"?>\n<{root} xmlns="{NS}"><ChangeInfo><Id>/change/{change_id}</Id>'
            f"<Status>{status}</Status><SubmittedAt>2026-01-01T00:00:00Z</SubmittedAt></ChangeInfo></{root}>"
        ).encode()


def operation(method: str, path: str) -> str:
    if re.search(r"/hostedzone/[^/]+/rrset/?$", path):
        return "change" if method == "POST" else "list"
    return "get_change" if "/change/" in path else "other"


class _Handler(BaseHTTPRequestHandler):
    proxy: Route53Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _send(self, status: int, data: bytes, ctype: str = "text/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        self.connection.close()

    def _handle(self) -> None:
        try:
            self._serve()
        except Exception as exc:  # answer like a 5xx instead of dropping the connection, and say why
            traceback.print_exc()
            error = ERROR_XML.format(code="InternalFailure", message=escape(repr(exc)), request_id="proxy-bug")
            self._send(500, error.encode())

    def _serve(self) -> None:
        p = self.proxy
        path = self.path.split("?", 1)[0]
        op = operation(self.command, path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        fault = p.take(op)
        if fault and fault.kind == "error":
            message = escape(fault.message)
            self._send(fault.status, ERROR_XML.format(code=fault.code, message=message, request_id="fault").encode())
            return
        if fault and fault.kind == "drop_before":
            return self._drop()
        if op in ("change", "list", "get_change") and p.throttled():
            error = ERROR_XML.format(code="Throttling", message="Rate exceeded", request_id="rate")
            self._send(400, error.encode())
            return
        status, data, ctype = self._dispatch(op, path, body, fault)
        if fault and fault.kind == "drop_after":
            return self._drop()
        self._send(status, data, ctype)

    def _dispatch(self, op: str, path: str, body: bytes | None, fault: Fault | None) -> tuple[int, bytes, str]:
        p = self.proxy
        if op == "change" and body:
            zone_id = path.split("/hostedzone/")[1].split("/")[0]
            status, data = p.change(zone_id, body, self.headers.get("User-Agent", ""))
            if status == 200 and fault and fault.kind == "pending":
                change_id = data.decode().split("/change/")[1].split("<")[0]
                p._held.add(change_id)
                data = p.change_info(change_id, "ChangeResourceRecordSetsResponse")
            return status, data, "text/xml"
        if op == "get_change":
            change_id = path.rsplit("/", 1)[-1]
            if change_id in p._changes:
                if fault is None or fault.kind != "pending":
                    p._held.discard(change_id)
                return 200, p.change_info(change_id, "GetChangeResponse"), "text/xml"
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        return p.forward(self.command, self.path, body, headers)
