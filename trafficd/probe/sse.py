"""Stream framing (pure: no I/O): a server-sent events parser, and a newline-delimited JSON one beside it.

`SseParser.feed(bytes)` returns the events completed by those bytes; `close()` the last one at end of stream.
Follows the WHATWG rules: lines end with CRLF, LF or CR (a CRLF split across two reads is one line end);
`:` starts a comment; a blank line dispatches the event; several `data:` lines join with `\\n`; one space after the
colon is dropped; a UTF-8 BOM at the start is skipped. Two deliberate departures, both to make a broken worker a
clear failure rather than a silent one:

- a line that is not an SSE field (`data`, `event`, `id`, `retry`) raises `SseNotSse` (a JSON or HTML body
  sent as `text/event-stream`), where browsers would ignore it;
- a line longer than `max_line_bytes` raises `SseLineTooLong` instead of growing the buffer without limit.

At end of stream a complete but undispatched event (last `data:` line not followed by a blank line) is returned
rather than dropped: `data: [DONE]\\n` then close is a finished stream.

`NdjsonParser` has the same interface for newline-delimited JSON streams (Ollama): each non-blank line is one
event. What an event means is each API's business (`trafficd/probe/apis/`).
"""

from __future__ import annotations

from dataclasses import dataclass

from trafficd.errors import TrafficdError

_FIELDS = frozenset({"data", "event", "id", "retry"})


class SseError(TrafficdError):
    """The byte stream is not a usable event stream."""


class SseLineTooLong(SseError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"an SSE line is longer than the read buffer ({limit} bytes)")
        self.limit = limit


class SseNotSse(SseError):
    def __init__(self, line: str) -> None:
        shown = line[:40] + ("…" if len(line) > 40 else "")
        super().__init__(f"not an SSE line: {shown!r}")
        self.line = line


class SseMalformedData(SseError):
    """An event's data is not what the API sends (invalid JSON, wrong shape)."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SseParser:
    """Incremental SSE parser: bytes in, events out. Keeps at most `max_line_bytes` of an unfinished line."""

    def __init__(self, max_line_bytes: int = 65536) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = b""
        self._skip_lf = False  # the previous read ended with CR: a leading LF belongs to it
        self._first = True
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if not chunk:
            return []
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buf = self._buf + chunk if self._buf else chunk
        events: list[SseEvent] = []
        start = 0
        n = len(buf)
        while start < n:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else n)
            if cr >= 0:
                end, nxt = cr, cr + 1
                if nxt < n and buf[nxt : nxt + 1] == b"\n":
                    nxt += 1
                elif nxt == n:
                    self._skip_lf = True
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            if end - start > self.max_line_bytes:
                raise SseLineTooLong(self.max_line_bytes)
            ev = self._line(buf[start:end])
            if ev is not None:
                events.append(ev)
            start = nxt
        rest = buf[start:]
        if len(rest) > self.max_line_bytes:
            raise SseLineTooLong(self.max_line_bytes)
        self._buf = rest
        return events

    def close(self) -> list[SseEvent]:
        """End of stream: an unfinished last line is processed, and a pending event is returned."""
        events: list[SseEvent] = []
        if self._buf:
            ev = self._line(self._buf)
            self._buf = b""
            if ev is not None:
                events.append(ev)
        ev = self._dispatch()
        if ev is not None:
            events.append(ev)
        return events

    def _line(self, raw: bytes) -> SseEvent | None:
        if self._first:
            self._first = False
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", errors="replace")
        if line[0] == ":":  # a comment: keep-alive pings
            return None
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name not in _FIELDS:
            raise SseNotSse(line)
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None  # retry: reconnection delay, meaningless for a probe

    def _dispatch(self) -> SseEvent | None:
        if self._id is not None:
            self._last_id = self._id
        if not self._data:
            self._event = ""
            return None
        ev = SseEvent(data="\n".join(self._data), event=self._event or "message", id=self._last_id)
        self._data = []
        self._event = ""
        return ev


class NdjsonParser:
    """Newline-delimited JSON (one object per line) with the `SseParser` interface: each line is one event."""

    def __init__(self, max_line_bytes: int = 65536) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buf = self._buf + chunk
        *lines, rest = buf.split(b"\n")
        if len(rest) > self.max_line_bytes or any(len(x) > self.max_line_bytes for x in lines):
            raise SseLineTooLong(self.max_line_bytes)
        self._buf = rest
        return [SseEvent(data=x.decode("utf-8", errors="replace")) for x in lines if x.strip()]

    def close(self) -> list[SseEvent]:
        rest, self._buf = self._buf, b""
        return [SseEvent(data=rest.decode("utf-8", errors="replace"))] if rest.strip() else []
