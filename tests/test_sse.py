"""The pure SSE parser and chunk interpretation: line endings, comments, multi-line data, limits, chunk meanings."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trafficd.probe.sse import (
    SseEvent,
    SseLineTooLong,
    SseMalformedData,
    SseNotSse,
    SseParser,
    body_has_error,
    interpret,
)

STREAM = (
    b": comment\n\n"
    b'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
    b"event: message\nid: 7\ndata: first\ndata: second\n\n"
    b"retry: 100\n\n"
    b"data:no-space\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SseEvent('{"choices":[{"delta":{"role":"assistant"}}]}'),
    SseEvent("first\nsecond", id="7"),
    SseEvent("no-space", id="7"),
    SseEvent("[DONE]", id="7"),
]


def parse_all(data: bytes, pieces: list[int] | None = None, limit: int = 65536) -> list[SseEvent]:
    p = SseParser(limit)
    out: list[SseEvent] = []
    cuts = [0, *(pieces or []), len(data)]
    for a, b in itertools.pairwise(cuts):
        out += p.feed(data[a:b])
    return out + p.close()


def test_events_comments_multiline_and_blank_lines() -> None:
    """Comments and retry lines are skipped, multi-line data joins with newlines, ids carry over."""
    assert parse_all(STREAM) == EXPECTED


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_endings(eol: bytes) -> None:
    """CRLF and lone CR end lines exactly like LF."""
    assert parse_all(STREAM.replace(b"\n", eol)) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM.replace(b"\n", b"\r\n"))), max_size=8))
def test_any_split_of_the_bytes_gives_the_same_events(cuts: list[int]) -> None:
    """However the network splits the bytes (even between CR and LF), the events are the same."""
    data = STREAM.replace(b"\n", b"\r\n")
    assert parse_all(data, sorted(cuts)) == EXPECTED


def test_bom_is_skipped_and_unterminated_last_event_is_kept() -> None:
    """A UTF-8 BOM at the start is ignored and `data: [DONE]` without a trailing blank line still counts."""
    assert parse_all(b"\xef\xbb\xbfdata: a\n\ndata: [DONE]") == [SseEvent("a"), SseEvent("[DONE]")]


def test_line_longer_than_the_buffer_is_a_clear_error() -> None:
    """A line over the limit raises SseLineTooLong naming the limit, whether or not it is terminated."""
    with pytest.raises(SseLineTooLong, match="1024 bytes"):
        SseParser(1024).feed(b"data: " + b"x" * 2000 + b"\n\n")
    p = SseParser(1024)
    with pytest.raises(SseLineTooLong):
        for _ in range(3):
            p.feed(b"x" * 500)


def test_non_sse_body_is_rejected() -> None:
    """An HTML or JSON body sent as an event stream raises SseNotSse instead of being silently ignored."""
    with pytest.raises(SseNotSse):
        SseParser().feed(b"<html>bad gateway</html>\n")
    with pytest.raises(SseNotSse):
        SseParser().feed(b'{"error": {"message": "x"}}\n')


def chunk(delta: str) -> SseEvent:
    return SseEvent('{"choices":[{"index":0,"delta":' + delta + ',"finish_reason":null}]}')


def test_interpret_content_role_reasoning_finish_usage_done() -> None:
    """Content, role-only, empty, reasoning, finish, usage and [DONE] chunks are told apart."""
    assert interpret(chunk('{"content":"hi"}')).content
    assert not interpret(chunk('{"role":"assistant"}')).content
    assert not interpret(chunk('{"content":""}')).content
    r = interpret(chunk('{"reasoning_content":"think"}'))
    assert r.reasoning and not r.content
    assert interpret(SseEvent('{"choices":[{"delta":{},"finish_reason":"stop"}]}')).finished
    assert interpret(SseEvent('{"choices":[],"usage":{"completion_tokens":3}}')).usage_only
    assert interpret(SseEvent("[DONE]")).done


def test_interpret_errors_and_malformed_data() -> None:
    """Error objects and `event: error` are errors; data that is not a chunk raises SseMalformedData."""
    assert interpret(SseEvent('{"error":{"message":"overloaded"}}')).error
    assert interpret(SseEvent("oops", event="error")).error
    for bad in ("{not json", "[1, 2]", '{"id": "x"}', '{"choices": "x"}'):
        with pytest.raises(SseMalformedData):
            interpret(SseEvent(bad))


def test_body_has_error() -> None:
    """A JSON body with an error object is an error body; other bodies are not."""
    assert body_has_error(b'{"error": {"message": "x"}}')
    assert not body_has_error(b'{"choices": []}')
    assert not body_has_error(b"<html></html>")


def test_crlf_split_by_an_empty_read_is_one_line_end() -> None:
    """CR, then an empty read, then LF is still one line end (no spurious blank line)."""
    p = SseParser()
    out = p.feed(b"data: a\r") + p.feed(b"") + p.feed(b"\ndata: b\r\n\r\n")
    assert out == [SseEvent("a\nb")]
