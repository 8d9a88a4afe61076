"""qpgevent/resp.py against RESP2 as the Redis protocol specification describes it, in any chunking.

The encoder here is written from the specification's text, not from resp.py:
simple string "+text CRLF", error "-text CRLF", integer ":n CRLF" (signed 64-bit),
bulk string "$length CRLF bytes CRLF" ("$-1 CRLF" the null bulk string), array
"*count CRLF" then count elements of any type ("*-1 CRLF" the null array).
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qpgevent.resp import ProtocolError, ReplyError, encode, parse


class Error(str):
    """An error reply's text, in the generated values."""


LINE = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=30)
SCALARS = st.one_of(
    st.builds(lambda s: s.encode(), LINE),  # simple string: parse gives its bytes
    st.builds(Error, LINE),
    st.integers(-2 ** 63, 2 ** 63 - 1),
    st.binary(max_size=40),  # bulk strings may hold CR, LF, anything
    st.none(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5), max_leaves=30)


def spec_encode(value, simple):
    """``value`` in RESP2; bytes as a simple string where ``simple`` says so and it has no CR/LF."""
    if isinstance(value, Error):
        return b"-" + value.encode() + b"\r\n"
    if isinstance(value, int):
        return b":" + str(value).encode() + b"\r\n"
    if isinstance(value, bytes):
        if simple and b"\r" not in value and b"\n" not in value:
            return b"+" + value + b"\r\n"
        return b"$" + str(len(value)).encode() + b"\r\n" + value + b"\r\n"
    if value is None:
        return b"$-1\r\n" if simple else b"*-1\r\n"
    return b"*" + str(len(value)).encode() + b"\r\n" + b"".join(spec_encode(v, simple) for v in value)


def comparable(value):
    """A sent value or a parsed reply, errors (ours and ReplyError) as ("error", text), lists element by element."""
    if isinstance(value, (Error, ReplyError)):
        return ("error", str(value))
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def feed(chunks):
    """Parse replies from ``chunks`` as a client reads them: all complete replies, and the unparsed rest."""
    buffer, replies = b"", []
    for chunk in chunks:
        buffer += chunk
        while True:
            parsed = parse(buffer)
            if parsed is None:
                break
            reply, used = parsed
            replies.append(reply)
            buffer = buffer[used:]
    return replies, buffer


def split(data, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0] + points, points + [len(data)])]


@settings(max_examples=300, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=4), st.booleans(), st.lists(st.integers(0, 10 ** 6), max_size=12))
def test_replies_parse_back_whatever_the_chunking(values, simple, cuts):
    """Every reply the spec allows comes back whole and in order, however the bytes are split."""
    data = b"".join(spec_encode(v, simple) for v in values)
    replies, rest = feed(split(data, cuts))
    assert [comparable(r) for r in replies] == [comparable(v) for v in values] and rest == b""


@settings(max_examples=300, deadline=None)
@given(VALUES, st.booleans(), st.data())
def test_a_truncated_reply_is_need_more(value, simple, data):
    """Any proper prefix of one reply is "need more" (None), never a value or an exception."""
    encoded = spec_encode(value, simple)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    assert parse(encoded[:cut]) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=60))
def test_garbage_is_need_more_or_a_protocol_error_only(garbage):
    try:
        result = parse(garbage)
    except ProtocolError:
        return
    assert result is None or (isinstance(result, tuple) and 0 < result[1] <= len(garbage))


@settings(max_examples=300, deadline=None)
@given(VALUES, st.booleans(), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=3))
def test_a_corrupted_reply_is_need_more_a_value_or_a_protocol_error(value, simple, where, junk):
    encoded = bytearray(spec_encode(value, simple))
    at = where % len(encoded)
    encoded[at:at + len(junk)] = junk
    try:
        parse(bytes(encoded))
    except ProtocolError:
        pass


@pytest.mark.parametrize("reply", [
    b"!3\r\nabc\r\n",  # not a RESP2 type
    b":12a\r\n", b": 12\r\n", b":+1\r\n", b":1_0\r\n", b":\r\n", b":" + b"9" * 5000 + b"\r\n",
    b"$-2\r\n", b"$3\r\nabcd\r\n", b"$x\r\n", b"$" + b"9" * 30 + b"\r\n", b"$999999999999\r\n",
    b"*-2\r\n", b"*1\r\n?\r\n", b"*1\r\n" * 100 + b":1\r\n",  # nested deeper than any reply we ask for
])
def test_malformed_replies_are_protocol_errors(reply):
    with pytest.raises(ProtocolError):
        parse(reply)


def test_encode_is_an_array_of_bulk_strings():
    assert encode(["SET", "kë", b"\r\n", 1000, -1]) == (
        b"*5\r\n$3\r\nSET\r\n$3\r\nk\xc3\xab\r\n$2\r\n\r\n\r\n$4\r\n1000\r\n$2\r\n-1\r\n")


@pytest.mark.parametrize("part", [None, 1.5, True, ["x"]])
def test_encode_refuses_what_is_not_a_string_or_an_integer(part):
    with pytest.raises(TypeError):
        encode(["GET", part])


@given(st.lists(st.one_of(st.binary(max_size=20), st.integers(-2 ** 63, 2 ** 63 - 1)), min_size=1, max_size=6))
def test_an_encoded_command_parses_as_an_array_of_its_parts(parts):
    command = encode(parts)
    assert parse(command) == ([p if isinstance(p, bytes) else str(p).encode() for p in parts], len(command))
