"""qpgevent/dkim_speed.py gives exactly what dkimpy's own helpers give (they are the model), faster."""
import dkim
import dkim.canonicalization
from hypothesis import given, settings, strategies as st

from qpgevent import dkim_speed

ORIGINAL_COMPRESS = dkim.canonicalization.compress_whitespace
ORIGINAL_STRIP = dkim.canonicalization.strip_trailing_whitespace
ORIGINAL_PARSE = dkim_speed._ORIGINAL_PARSE

# Bytes rich in what the helpers look at: spaces, tabs, CR, LF, colons, "From ".
PIECES = st.sampled_from([b" ", b"  ", b"\t", b"\r", b"\n", b"\r\n", b"a", b"Subject:", b"From ", b":", b"x y",
                          b"\xff", b"\x00", b" \r\n", b"\t\r\n"])
CONTENT = st.lists(PIECES, max_size=60).map(b"".join)


@settings(max_examples=500)
@given(CONTENT)
def test_whitespace_helpers_match_dkimpy(content):
    assert dkim_speed.compress_whitespace(content) == ORIGINAL_COMPRESS(content)
    assert dkim_speed.strip_trailing_whitespace(content) == ORIGINAL_STRIP(content)


def outcome(parse, message):
    try:
        return parse(message)
    except Exception as exc:  # the same failure (MessageFormatError, or IndexError on a leading fold) counts
        return type(exc)


@settings(max_examples=1000)
@given(CONTENT)
def test_rfc822_parse_matches_dkimpy(message):
    assert outcome(dkim_speed.rfc822_parse, message) == outcome(ORIGINAL_PARSE, message)


@given(st.lists(st.sampled_from([b"From: a@b.test", b"Subject: hi", b"\tfolded", b" more", b"To: c@d.test"]),
                max_size=8), st.sampled_from([b"\n", b"\r\n"]), CONTENT)
def test_rfc822_parse_matches_dkimpy_on_well_formed_messages(fields, newline, body):
    message = newline.join(fields) + newline + newline + body
    assert outcome(dkim_speed.rfc822_parse, message) == outcome(ORIGINAL_PARSE, message)


def test_install_puts_them_in_dkimpys_place():
    dkim_speed.install()
    assert dkim.rfc822_parse is dkim_speed.rfc822_parse
    assert dkim.canonicalization.compress_whitespace is dkim_speed.compress_whitespace
