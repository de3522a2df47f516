"""Server-sent events parser for OpenAI-style streams, and the meaning of each chunk (pure: no I/O).

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

`interpret(data)` reads one event's data as an OpenAI chat-completion chunk: `[DONE]`, an error object, content
and `reasoning_content` deltas, `finish_reason`, or a `usage`-only chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_FIELDS = frozenset({"data", "event", "id", "retry"})


class SseError(Exception):
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
    """An event's data is not a chat-completion chunk (invalid JSON, wrong shape)."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SseParser:
    """Incremental SSE parser: bytes in, events out. Keeps at most `max_line_bytes` of an unfinished line."""

    def __init__(self, max_line_bytes: int = 65536) -> None:
        self.max_line_bytes = max_line_bytes
        self.comments = 0
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
        if line[0] == ":":
            self.comments += 1
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


@dataclass(frozen=True, slots=True)
class Chunk:
    """What one event means for the probe."""

    done: bool = False  # data: [DONE]
    error: bool = False  # an error object (or `event: error`)
    content: bool = False  # a non-empty delta.content
    reasoning: bool = False  # a non-empty delta.reasoning_content (or delta.reasoning)
    finished: bool = False  # a choice carried a finish_reason
    usage_only: bool = False  # no choices, a usage object


DONE = Chunk(done=True)


def interpret(ev: SseEvent) -> Chunk:
    """Classify one event; raises `SseMalformedData` when its data is not a chat-completion chunk."""
    data = ev.data.strip()
    if data == "[DONE]":
        return DONE
    if ev.event == "error":
        return Chunk(error=True)
    try:
        obj: Any = json.loads(data)
    except ValueError:
        raise SseMalformedData("an event's data is not JSON") from None
    if not isinstance(obj, dict):
        raise SseMalformedData("an event's data is not a JSON object")
    if obj.get("error") is not None or obj.get("object") == "error":
        return Chunk(error=True)
    choices = obj.get("choices")
    if choices is None or choices == []:
        if obj.get("usage") is not None:
            return Chunk(usage_only=True)
        if choices == []:
            return Chunk()
        raise SseMalformedData("a chunk has neither choices nor usage")
    if not isinstance(choices, list):
        raise SseMalformedData("a chunk's choices is not a list")
    content = reasoning = finished = False
    for choice in choices:
        if not isinstance(choice, dict):
            raise SseMalformedData("a choice is not an object")
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise SseMalformedData("a delta is not an object")
        if delta.get("content"):
            content = True
        if delta.get("reasoning_content") or delta.get("reasoning"):
            reasoning = True
        if choice.get("finish_reason"):
            finished = True
    return Chunk(content=content, reasoning=reasoning, finished=finished)


def body_has_error(body: bytes) -> bool:
    """True when a (non-stream) response body is a JSON object carrying an error: HTTP 200 with an error."""
    try:
        obj: Any = json.loads(body.decode("utf-8", errors="replace"))
    except ValueError:
        return False
    return isinstance(obj, dict) and (obj.get("error") is not None or obj.get("object") == "error")
