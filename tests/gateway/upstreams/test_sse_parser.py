"""SseParser: event-stream rules, arbitrary chunk boundaries, size cap, linear large events."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.upstreams.sse_parser import EventTooLarge, SseEvent, SseParser

STREAM = (
    b": comment\r\n"
    b"event: endpoint\r\n"
    b"data: /messages/?session_id=abc\r\n"
    b"\r\n"
    b"id: 7\n"
    b"data: {\"a\":\n"
    b"data:1}\n"
    b"\n"
    b"event: ping\r"
    b"data: x\r"
    b"\r"
    b"retry: 1500\n"
    b"data: \xc3\xa9\xe2\x80\x94\xf0\x9f\x99\x82\n"
    b"\n"
)

EXPECTED = [
    SseEvent(event="endpoint", data=b"/messages/?session_id=abc", id=None),
    SseEvent(event="message", data=b'{"a":\n1}', id="7"),
    SseEvent(event="ping", data=b"x", id="7"),
    SseEvent(event="message", data="é—🙂".encode(), id="7"),
]


def feed_in_pieces(parser: SseParser, data: bytes, cuts: list[int]) -> list[SseEvent]:
    events: list[SseEvent] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += parser.feed(data[start:cut])
        start = cut
    return events


def test_parses_fields_line_endings_and_multiline_data() -> None:
    parser = SseParser()
    assert parser.feed(STREAM) == EXPECTED
    assert parser.last_event_id == "7"
    assert parser.retry_ms == 1500


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    assert feed_in_pieces(SseParser(), STREAM, cuts) == EXPECTED


def test_cr_at_chunk_end_followed_by_lf_is_one_line_break() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r") == [SseEvent(event="message", data=b"a", id=None)]
    assert parser.feed(b"\ndata: b\n\n") == [SseEvent(event="message", data=b"b", id=None)]


def test_event_without_data_is_not_dispatched_and_resets_the_type() -> None:
    parser = SseParser()
    assert parser.feed(b"event: endpoint\n\ndata: x\n\n") == [SseEvent(event="message", data=b"x", id=None)]


def test_the_priming_event_is_dispatched_empty_and_keeps_its_id() -> None:
    parser = SseParser()
    primed = parser.feed(b"id: 0-abc\ndata:\n\n")
    assert primed == [SseEvent(event="message", data=b"", id="0-abc")] and primed[0].empty
    assert parser.last_event_id == "0-abc"  # resumption starts after it
    (blank,) = parser.feed(b"data: \ndata:  \n\n")
    assert blank.empty and blank.id == "0-abc"
    (message,) = parser.feed(b'id: 1-abc\ndata: {"jsonrpc":"2.0"}\n\n')
    assert not message.empty and (message.id, parser.last_event_id) == ("1-abc", "1-abc")


def test_leading_bom_is_ignored() -> None:
    assert SseParser().feed(b"\xef\xbb\xbfdata: x\n\n") == [SseEvent(event="message", data=b"x", id=None)]


def test_an_event_past_the_cap_raises_while_still_buffering() -> None:
    parser = SseParser(max_event_bytes=1000)
    parser.feed(b"data: " + b"x" * 600)
    with pytest.raises(EventTooLarge):
        parser.feed(b"x" * 600)
    assert parser.buffered_bytes == 0


def test_data_lines_count_toward_the_cap() -> None:
    parser = SseParser(max_event_bytes=1000)
    with pytest.raises(EventTooLarge):
        parser.feed(b"".join(b"data: " + bytes([c]) * 400 + b"\n" for c in b"xyz"))


def test_a_10_mb_event_in_small_chunks_is_parsed_in_linear_time() -> None:
    payload = b"{" + b"x" * (10 * 1024 * 1024) + b"}"
    body = b"data: " + payload + b"\n\n"
    parser = SseParser(max_event_bytes=20 * 1024 * 1024)
    started = time.perf_counter()
    events = [e for i in range(0, len(body), 16384) for e in parser.feed(body[i : i + 16384])]
    elapsed = time.perf_counter() - started
    assert [e.data for e in events] == [payload]
    # A quadratic parser (rescanning the pending buffer per chunk) needs tens of seconds here.
    assert elapsed < 2.0
