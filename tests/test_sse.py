"""The pure stream parsers: SSE line endings, comments, multi-line data, limits; newline-delimited JSON."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trafficd.probe.sse import NdjsonParser, SseEvent, SseLineTooLong, SseNotSse, SseParser

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


def test_crlf_split_by_an_empty_read_is_one_line_end() -> None:
    """CR, then an empty read, then LF is still one line end (no spurious blank line)."""
    p = SseParser()
    out = p.feed(b"data: a\r") + p.feed(b"") + p.feed(b"\ndata: b\r\n\r\n")
    assert out == [SseEvent("a\nb")]


def test_ndjson_lines_are_events_whatever_the_reads() -> None:
    """Newline-delimited JSON split anywhere gives one event per non-blank line; the last line without \\n too."""
    stream = b'{"a": 1}\n\n{"b": 2}\n{"c": 3}'
    for cut in range(len(stream) + 1):
        p = NdjsonParser()
        out = p.feed(stream[:cut]) + p.feed(stream[cut:]) + p.close()
        assert [e.data for e in out] == ['{"a": 1}', '{"b": 2}', '{"c": 3}']


def test_ndjson_line_over_the_limit_raises() -> None:
    """A line longer than the limit raises SseLineTooLong, even before its newline arrives."""
    with pytest.raises(SseLineTooLong):
        NdjsonParser(1024).feed(b"x" * 2000)
