"""The header block parser reads what the ``email`` package's compat32 policy reads, and writes it back byte-exact."""
from email.parser import HeaderParser
from email.policy import compat32

from hypothesis import given, settings, strategies as st

from qpgevent.header import Header

NAME = st.text(alphabet=[chr(c) for c in range(0x21, 0x7F) if chr(c) != ":"], min_size=1, max_size=12)
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20)
LEAD = st.sampled_from(["", " ", "  ", "\t", " \t"])
CONTINUATION = st.builds(lambda ws, text: ws + text, st.sampled_from([" ", "\t", "  "]), TEXT)
FIELD = st.builds(lambda name, lead, text, more: "".join(["%s:%s%s\n" % (name, lead, text)] + [c + "\n" for c in more]),
                  NAME, LEAD, TEXT, st.lists(CONTINUATION, max_size=3))


def email_package_items(text):
    return list(HeaderParser(policy=compat32).parsestr(text, headersonly=True).raw_items())


@settings(max_examples=300, deadline=None)
@given(st.lists(FIELD, min_size=1, max_size=6))
def test_fields_match_the_email_package(fields):
    """Names and raw values (folding included) are those the email package's compat32 parser gives."""
    text = "".join(fields)
    assert list(Header.parse(text)) == email_package_items(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(FIELD, min_size=1, max_size=6), st.booleans())
def test_block_is_written_back_byte_exact(fields, crlf):
    """Whitespace after the colon and folded lines survive: as_string gives back the block (LF endings)."""
    text = "".join(fields)
    received = text.replace("\n", "\r\n") if crlf else text
    assert Header.parse(received).as_string() == text


def test_a_line_that_is_no_field_ends_the_block():
    """Everything from the first line that is neither ``name:`` nor a continuation is not header."""
    header = Header.parse("Subject: hi\nnot a header line\nTo: x\n")
    assert list(header) == [("Subject", "hi")]


def test_values_keep_8bit_text_and_continuations():
    """UTF-8 and undecodable bytes (surrogateescape) pass through; a continuation joins its field."""
    raw = "Subject: caf\u00e9 \udcff\n =?utf-8?q?x?=\nX-Empty:\nX-Tab:\tv\n"
    header = Header.parse(raw)
    assert header.get("subject") == "caf\u00e9 \udcff\n =?utf-8?q?x?="
    assert header.get("x-empty") == ""
    assert header.as_string() == raw
