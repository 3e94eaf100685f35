"""The sans-IO framer: any split of any byte stream gives the same requests (gunicorn's parser
tests feed whole, line by line, byte by byte and in random chunks; hypothesis does the last)."""
from hypothesis import given, settings
from hypothesis import strategies as st

from multiserve.protocol import LineFramer, LineTooLong, error_reply


def frame(chunks, max_line=65536):
    framer = LineFramer(max_line)
    lines = []
    for chunk in chunks:
        lines.extend(framer.feed(chunk))
        # the hot path's shortcut agrees with the state it stands for
        assert framer.settled == (not framer.partial and not framer.failed)
        if framer.failed:
            return lines, None, True
    return lines, framer.eof(), False


def reference(stream: bytes):
    """What the rules say, computed the obvious way."""
    parts = stream.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    return lines, (parts[-1] or None)


def splits(draw_data, stream):
    cuts = sorted(draw_data)
    cuts = [c % (len(stream) + 1) for c in cuts]
    cuts = sorted(set([0, *cuts, len(stream)]))
    return [stream[a:b] for a, b in zip(cuts, cuts[1:])]


stream_bytes = st.lists(st.sampled_from([b"a", b"\n", b"\xff", b"\xc3\xa9", b"xyz", b"\r", b" "]), max_size=200).map(b"".join)


@given(stream=stream_bytes, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
@settings(max_examples=300, deadline=None)  # a logic property, not a timing: no per-example deadline on a busy CI machine
def test_any_split_gives_the_same_requests(stream, cuts):
    expected = reference(stream)
    assert frame([stream]) == (*expected, False)
    assert frame([bytes([b]) for b in stream]) == (*expected, False)
    assert frame(splits(cuts, stream)) == (*expected, False)


@given(stream=stream_bytes, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
       limit=st.integers(min_value=1, max_value=12))
@settings(max_examples=300, deadline=None)  # a logic property, not a timing: no per-example deadline on a busy CI machine
def test_the_line_limit_holds_for_any_split(stream, cuts, limit):
    lines, last, failed = frame(splits(cuts, stream), max_line=limit)
    ref_lines, ref_last = reference(stream)
    too_long = [i for i, line in enumerate(ref_lines) if len(line) - 1 > limit]
    if too_long:
        # every request before the first oversized one is answered, in order, then the error
        assert failed and lines == ref_lines[: too_long[0]]
    elif ref_last is not None and len(ref_last) > limit:
        assert failed and lines == ref_lines
    else:
        assert not failed and (lines, last) == (ref_lines, ref_last)


def test_memory_is_bounded_by_the_limit():
    framer = LineFramer(100)
    for _ in range(1000):
        framer.feed(b"x" * 50)
        assert framer.pending <= 100
        if framer.failed:
            break
    assert framer.failed and framer.pending == 0
    assert framer.feed(b"more\n") == []  # a failed framer produces nothing more


def test_pipelined_requests_come_out_in_order():
    framer = LineFramer()
    assert framer.feed(b"a\nb\nc\npart") == [b"a\n", b"b\n", b"c\n"]
    assert framer.feed(b"ial\n") == [b"partial\n"]
    assert framer.eof() is None


def test_error_reply_wording():
    assert error_reply(str(LineTooLong(65536))) == b"ERR line too long (limit 65536 bytes)\n"
