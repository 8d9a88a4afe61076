"""Property-based fuzzing of the in-memory session (hypothesis).

Streams are built from a grammar of realistic commands, messages, BDAT chunks and smuggling fragments,
plus random bytes and byte-level mutations, and fed in random pieces.  For every stream:

* no exception escapes ``feed``/``eof``;
* everything the session writes parses as RFC 5321 replies, and every 2xx/4xx/5xx reply (but the greeting,
  EHLO/HELO and 354) carries an enhanced status of the reply's class (RFC 3463);
* the state stays consistent: recipients only with a sender, DATA/BDAT only inside a transaction, nothing
  written once the session is closed;
* an independent model of RFC 5321/3030 framing and of our documented limits, reading the same stream,
  predicts every reply code and exactly what is queued: a message is queued only after a complete DATA
  (``CRLF.CRLF``) or ``BDAT ... LAST``, holding the bytes the model expects.  The model is written from
  the RFC text, not from our code: RFC 5321 4.5.2 (a line's first dot is removed when it starts with one),
  4.5.3.1.6 (a line is at most 1000 octets with its CRLF, "not counting the leading dot duplicated for
  transparency"; checked only with ``max_line_length 1000``, our strict mode), RFC 3030 2 (a BDAT message
  is the chunks' octets, nothing added or removed, no transparency; a chunk that takes the message past
  the size limit may be refused at once) and 3 (a BINARYMIME body is binary: kept octet for octet).

Where the grammar gives a MAIL or RCPT the model cannot classify (a mutated address), the model takes the
session's answer, but only from the set of answers that command may give, and checks its consequences.
A stream whose outcome legitimately depends on where it is cut (in strict mode, a bare CR or LF inside an
overlong line: dropped unread as it streams in, or refused when it arrives whole) is skipped.
"""
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qpgevent import OK
from qpgevent.modes import DataStream
from qpgevent.smtp import Session
from qpgevent.testing import TestSession, make_smtpd, parse_replies

from conftest import with_dsn

DATABYTES = 2000  # above the 1000-octet line limit, so the two refusals can be told apart
MAX_RCPT = 3
COMMAND_LIMIT = 512  # RFC 5321 4.5.3.1.4
AUTH_LIMIT = 12288  # RFC 4954 4
DATA_LINE_LIMIT = 1000  # RFC 5321 4.5.3.1.6, CRLF included, transparency dot not; only in strict mode
VERBS = {"auth", "bdat", "data", "ehlo", "helo", "help", "mail", "noop", "quit", "rcpt", "rset", "vrfy", "xclient",
         "xforward"}
NO_STATUS = {220, 354, 334}  # RFC 2034 3: no enhanced status on these (and on EHLO/HELO's 250)

_CANONICAL_MAIL = re.compile(r"MAIL FROM:<[a-z0-9]+@[a-z0-9]+\.test>((?: (?:SIZE=\d{1,6}|BODY=(?:7BIT|8BITMIME|BINARYMIME)"
                             r"|SMTPUTF8|RET=(?:FULL|HDRS)))*)\Z")
_CANONICAL_RCPT = re.compile(r"RCPT TO:<(?:[a-z0-9]+@([a-z0-9]+(?:\.[a-z0-9]+)*)|postmaster)>\Z")
_HEADER_LINE = re.compile(rb"[!-9;-~]+:|[ \t]")
_NEWLINES = re.compile(rb"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BDAT = re.compile(r"(\d{1,15})(?: +(LAST))? *\Z", re.IGNORECASE)


class Ambiguous(Exception):
    """The stream's outcome legitimately depends on how it was cut (a bare newline inside an overlong line)."""


class Model:
    """What a correct server does with a byte stream, replayed against the replies the session gave."""

    def __init__(self, replies, mail_params, normalize, strict):
        self.replies = list(replies)
        self.mail_params = list(mail_params)  # BODY= of each MAIL the session accepted, in order
        self.normalize = normalize
        self.strict = strict  # max_line_length 1000
        self.queued = []
        self.hello = None
        self.closed = False
        self.pending = None  # "data" or "chunk" when the stream ends inside a message
        self.reset()

    def reset(self):
        self.sender = False
        self.binarymime = False
        self.rcpts = 0
        self.chunks = None  # bytearray while a BDAT transaction is open

    # -- replies ------------------------------------------------------------------------------------
    def expect(self, code, status="any"):
        assert self.replies, "expected %d, the session sent nothing more" % code
        reply = self.replies.pop(0)
        assert reply.code == code, "expected %d, got %s" % (code, reply)
        if status != "any":
            assert reply.status == status, "expected %d %s, got %s" % (code, status, reply)
        return reply

    def oracle(self, allowed):
        assert self.replies, "expected one of %s, the session sent nothing more" % sorted(allowed)
        reply = self.replies.pop(0)
        assert reply.code in allowed, "got %s, allowed %s" % (reply, sorted(allowed))
        return reply.code

    # -- the stream -----------------------------------------------------------------------------------
    def run(self, data):
        position = 0
        while not self.closed and position <= len(data):
            newline = data.find(b"\n", position)
            if newline < 0:
                if len(data) - position > AUTH_LIMIT:
                    self.expect(500, "5.5.2")
                return
            raw = data[position:newline + 1]
            position = newline + 1
            if len(raw) - 1 > AUTH_LIMIT and self._command_outcome(raw) == 521:
                raise Ambiguous  # dropped as it streams in (500), or seen whole with its bare CR/LF (521)
            position = self.command_line(raw, data, position)

    def finish(self):
        """The client's EOF."""
        if not self.closed and (self.pending or self.chunks is not None):
            self.expect(451, "4.3.0")
        self.closed = True

    @staticmethod
    def _bare(raw):
        return not raw.endswith(b"\r\n") or b"\r" in raw[:-2]

    def _command_outcome(self, raw):
        if self._bare(raw) and (not self.normalize or b"\r" in raw.rstrip(b"\r\n")):
            return 521
        return 500

    def command_line(self, raw, data, position):
        if self._command_outcome(raw) == 521:
            self.expect(521, "5.5.2")
            self.closed = True
            return position
        body = raw.rstrip(b"\r\n")
        if len(body) + 2 > (AUTH_LIMIT if body[:5].upper() == b"AUTH " else COMMAND_LIMIT):
            self.expect(500, "5.5.2")
            return position
        try:
            line = body.decode("utf-8")
        except UnicodeDecodeError:
            self.expect(500, "5.5.2")
            return position
        if _CONTROL.search(line):
            self.expect(500, "5.5.2")
            return position
        verb, _, rest = line.partition(" ")
        rest = rest.lstrip(" ")
        lower = verb.lower()
        if not re.fullmatch(r"\w{1,12}", verb) or lower not in VERBS or lower == "auth":
            if lower == "proxy":  # only a configured proxy may send PROXY, and only first
                self.expect(554, "5.7.1")
                self.closed = True
            else:
                self.expect(500, "5.5.1")
            return position
        return getattr(self, "verb_" + lower)(line, rest, data, position)

    # -- verbs -------------------------------------------------------------------------------------------
    def verb_helo(self, line, rest, data, position, verb="helo"):
        if not rest.split():
            self.expect(501, "5.5.4")
        elif self.hello:
            self.expect(503, "5.5.1")
        else:
            self.expect(250, None)
            self.hello = verb
        return position

    def verb_ehlo(self, line, rest, data, position):
        return self.verb_helo(line, rest, data, position, "ehlo")

    def verb_xclient(self, line, rest, data, position):
        self.expect(550, "5.7.0")  # the fuzzed server lists no xclient_hosts: nobody may rename the client
        return position

    verb_xforward = verb_xclient

    def verb_mail(self, line, rest, data, position):
        if not self.hello or self.sender:
            self.expect(503, "5.5.1")
            return position
        self.reset()
        canonical = _CANONICAL_MAIL.match(line)
        if canonical:
            size = re.findall(r"SIZE=(\d+)", canonical.group(1))
            if size and int(size[-1]) > DATABYTES:
                self.expect(552, "5.3.4")
                return position
            self.expect(250, "2.1.0")
            code = 250
        else:
            code = self.oracle({250, 501, 552, 553, 555})
        if code == 250:
            body = self.mail_params.pop(0)
            if canonical:
                said = re.findall(r"BODY=(\w+)", canonical.group(1))
                assert body == (said[-1] if said else None), (line, body)
            self.sender = True
            self.binarymime = (body or "").upper() == "BINARYMIME"
        return position

    def verb_rcpt(self, line, rest, data, position):
        if not self.sender:
            self.expect(503, "5.5.1")
            return position
        canonical = _CANONICAL_RCPT.match(line)
        if canonical:
            if self.rcpts >= MAX_RCPT:
                self.expect(452, "4.5.3")
            elif canonical.group(1) in (None, "example.com"):
                self.expect(250, "2.1.5")
                self.rcpts += 1
            else:
                self.expect(550, "5.7.1")
            return position
        if self.oracle({250, 452, 501, 550, 553, 555}) == 250:
            self.rcpts += 1
            assert self.rcpts <= MAX_RCPT
        return position

    def verb_rset(self, line, rest, data, position):
        self.expect(250, "2.0.0")
        self.reset()
        return position

    def verb_noop(self, line, rest, data, position):
        self.expect(250, "2.0.0")
        return position

    def verb_vrfy(self, line, rest, data, position):
        self.expect(252, "2.1.5")
        return position

    def verb_help(self, line, rest, data, position):
        self.expect(214, "2.0.0")
        return position

    def verb_quit(self, line, rest, data, position):
        self.expect(221, "2.0.0")
        self.closed = True
        return position

    def verb_data(self, line, rest, data, position):
        if self.chunks is not None:
            self.expect(503, "5.5.1")
            return position
        if self.binarymime:
            self.expect(503, "5.6.1")
            return position
        if not self.sender or not self.rcpts:
            self.expect(503, "5.5.1")
            return position
        self.expect(354, None)
        return self.read_data(data, position)

    def verb_bdat(self, line, rest, data, position):
        found = _BDAT.match(rest)
        if not found:
            self.expect(501, "5.5.4")
            self.closed = True
            return position
        size, last = int(found.group(1)), found.group(2) is not None
        refused = self.chunks is None and (not self.sender or not self.rcpts)
        if self.chunks is None and not refused:
            self.chunks = bytearray()
        chunk = data[position:position + size]
        if len(chunk) < size:
            self.pending = "chunk"
            return len(data) + 1
        position += size
        if refused:
            self.expect(503, "5.5.1")
            self.reset()
            return position
        self.chunks += chunk
        stored = self.bdat_message(bytes(self.chunks), last)
        if last:
            self.end_message(stored)
        elif stored.size_min > DATABYTES:
            self.expect(552, "5.3.4")  # RFC 3030 2: refused at the chunk that crosses the limit
            self.reset()
        elif stored.size_max > DATABYTES:
            raise Ambiguous  # over only if the overlong lines were not dropped as they streamed in
        else:
            self.expect(250, "2.0.0")
        return position

    # -- message content -------------------------------------------------------------------------------
    def overlong(self, line):
        """RFC 5321 4.5.3.1.6, in strict mode: ``line`` (as received, its line end included, any
        transparency dot already removed) is over 1000 octets."""
        return self.strict and len(line) > DATA_LINE_LIMIT

    def droppable(self, received):
        """In strict mode a line whose first 1001 octets arrive before its LF may be dropped unread (and
        uncounted) as it streams in; ``received`` is the line as sent, with its LF."""
        return self.strict and len(received) - 1 > DATA_LINE_LIMIT

    def read_data(self, data, position):
        """The DATA stream up to ``CRLF.CRLF``; returns where the commands resume."""
        stored = Stored()
        after_crlf = True  # a line starts after CRLF (RFC 5321 2.3.8: CRLF is the only line end)
        while True:
            newline = data.find(b"\n", position)
            if newline < 0:
                self.pending = "data"
                return len(data) + 1
            received = data[position:newline + 1]
            position = newline + 1
            if after_crlf and received == b".\r\n":
                self.end_message(stored)
                return position
            bare = self._bare(received)
            if bare and not self.normalize:
                if self.droppable(received):
                    raise Ambiguous  # dropped unread as it streams in, or refused whole for its bare newline
                self.expect(521, "5.5.2")
                self.closed = True
                return position
            # RFC 5321 4.5.2: "If the first character is a period and there are other characters on the
            # line, the first character is deleted."
            line = received[1:] if received[:1] == b"." and after_crlf else received
            after_crlf = received.endswith(b"\r\n")
            stored.add(_NEWLINES.sub(b"\n", line), self.overlong(line), self.droppable(received))

    def bdat_message(self, content, last):
        """RFC 3030: the message is exactly the chunks' octets.  Stored as text (any CR, LF or CRLF a line
        break, a last line without one given one), or for BINARYMIME with the body from the blank line on
        as received.  ``last`` False: what is stored so far, the open last line counted as it stands."""
        stored = Stored(binary=self.binarymime)
        received_lines = re.findall(rb"[^\n]*\n", content)
        tail = content[sum(map(len, received_lines)):]
        for received in received_lines:
            self.bdat_line(stored, received)
        if tail and stored.binary and not stored.in_header:
            stored.add(tail, False, False, tail)  # binary: no line end added
        elif tail and last:
            self.bdat_line(stored, tail + b"\r\n")
        elif tail:
            stored.size_max += len(tail)
            if self.binarymime or not self.droppable(tail + b"\n"):
                stored.size_min += len(tail)
        return stored

    def bdat_line(self, stored, received):
        overlong = not self.binarymime and self.overlong(received)
        stored.add(_NEWLINES.sub(b"\n", received), overlong, overlong and self.droppable(received), received)

    def end_message(self, stored):
        if stored.size_min > DATABYTES:
            self.expect(552, "5.3.4")
        elif stored.size_max > DATABYTES:
            reply = self.expect(552)
            assert reply.status in ("5.3.4", "5.6.0"), reply
        elif stored.overlong:
            self.expect(552, "5.6.0")
        else:
            self.expect(250, "2.0.0")
            self.queued.append(bytes(stored.message))
        self.reset()


class Stored:
    """The message as the spool should hold it: header lines, a blank line (added if missing), body.

    Text is stored with LF line ends; a binary (BINARYMIME) body, from the blank line on, as received.
    ``size_min`` leaves out the lines that may be dropped unread (strict mode); ``size_max`` counts all.
    The added blank line is ours, not the client's: it counts toward neither.
    """

    def __init__(self, binary=False):
        self.binary = binary
        self.message = bytearray()
        self.in_header = True
        self.headers = 0
        self.size_min = self.size_max = 0
        self.overlong = False

    def add(self, line, overlong, droppable, received=None):
        """One line as text (``line``, LF-ended) and as ``received`` (the BDAT octets)."""
        self.overlong |= overlong
        if self.in_header:
            header = _HEADER_LINE.match(line) and (self.headers or line[:1] not in b" \t")
            if line != b"\n" and header:
                self.headers += 1
            else:
                self.in_header = False
                if line != b"\n":
                    self.message += b"\r\n" if self.binary else b"\n"
        if self.binary and not self.in_header:
            line = received
        self.message += line
        self.size_max += len(line)
        if not droppable:
            self.size_min += len(line)


# -- the session under test -------------------------------------------------------------------------------

class Harness:
    """One daemon per bare_newline and max_line_length setting, its queue captured, MAIL parameters recorded."""

    def __init__(self, tmp_path, normalize, strict):
        config = with_dsn({"rcpthosts": ["example.com"], "databytes": str(DATABYTES), "max_rcpt": str(MAX_RCPT)})
        if normalize:
            config["bare_newline"] = "normalize"
        if strict:
            config["max_line_length"] = str(DATA_LINE_LIMIT)
        name = "%s-%s" % ("normalize" if normalize else "reject", "strict" if strict else "any")
        self.smtpd = make_smtpd(tmp_path / name, plugins=["rcpt_ok", "dsn_queue"], config=config)
        self.queued = []
        self.mail_params = []
        probe = TestSession(self.smtpd, greet=False)
        probe.mock_hook("queue", self.queue, name="capture_queue")
        probe.mock_hook("mail", self.mail, name="record_mail")

    def queue(self, plugin, transaction):
        assert transaction.sender is not None and transaction.recipients
        self.queued.append(b"".join(transaction.body_blocks(0)))  # the spool, header block included
        return OK

    def mail(self, plugin, transaction, sender, **params):
        self.mail_params.append(params.get("body"))

    def run(self, stream, cuts):
        """Feed ``stream`` cut at ``cuts``, then EOF; check every write as it happens; returns the session and
        every reply after the greeting."""
        self.queued.clear()
        self.mail_params.clear()
        session = TestSession(self.smtpd)
        assert [r.code for r in session.greeting] == [220] and session.greeting[0].status is None
        replies = []
        points = [0, *sorted(cut % (len(stream) + 1) for cut in cuts), len(stream)]
        for start, end in zip(points, points[1:]):
            was_closed = session.closed
            replies += check_write(session, lambda: session.session.feed(stream[start:end]), was_closed)
        replies += check_write(session, session.session.eof, session.closed)
        assert session.closed
        return session, replies


def check_write(session, action, was_closed):
    """Run ``action``; what it wrote must be well-formed replies, and nothing at all from a closed session."""
    action()
    written = session.transport.take()
    if was_closed:
        assert written == b"", written
    replies = parse_replies(written)
    for reply in replies:
        if reply.code // 100 in (2, 4, 5) and reply.code not in NO_STATUS and not reply.lines[0].startswith("mx.test Hi "):
            for line in reply.lines:
                assert re.match(r"%d\.\d{1,3}\.\d{1,3} " % (reply.code // 100), line + " "), reply
    check_state(session)
    return replies


def check_state(session):
    transaction = session.transaction
    if transaction.recipients:
        assert transaction.sender is not None
    inner = session.session
    if isinstance(inner.mode, DataStream) or inner._chunk is not None:  # a message is being built
        assert transaction.sender is not None and transaction.recipients
    if session.closed:
        assert not inner.in_data()


@pytest.fixture(scope="module")
def harnesses(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    return {(normalize, strict): Harness(tmp_path, normalize, strict) for normalize in (False, True)
            for strict in (False, True)}


# -- the grammar ---------------------------------------------------------------------------------------------

COMMANDS = [
    b"EHLO client.test\r\n", b"HELO client.test\r\n", b"EHLO\r\n", b"ehlo x\r\n",
    b"MAIL FROM:<a@b.test>\r\n", b"MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n", b"MAIL FROM:<a@b.test> SIZE=100\r\n",
    b"MAIL FROM:<a@b.test> SIZE=100000\r\n", b"MAIL FROM:<a@b.test> SMTPUTF8 RET=FULL\r\n", b"MAIL FROM:<>\r\n",
    "MAIL FROM:<jösé@exämple.test> SMTPUTF8\r\n".encode(), "MAIL FROM:<jösé@exämple.test>\r\n".encode(),
    b"MAIL FROM:<bad\r\n", b"MAIL FROM:<a@b.test> FOO=1\r\n", b"mail from:<a@b.test> body=binarymime\r\n",
    b"RCPT TO:<u@example.com>\r\n", b"RCPT TO:<v@example.com>\r\n", b"RCPT TO:<postmaster>\r\n",
    b"RCPT TO:<u@foreign.test>\r\n", b"RCPT TO:<>\r\n", b"RCPT TO:<u@example.com> NOTIFY=BOGUS\r\n",
    b"RCPT TO:<w@example.com> NOTIFY=SUCCESS ORCPT=rfc822;w@example.com\r\n",
    b"DATA\r\n", b"DATA\r\n", b"RSET\r\n", b"NOOP\r\n", b"VRFY u\r\n", b"HELP\r\n", b"XYZZY\r\n", b"\r\n",
    b"AUTH PLAIN AGEAYg==\r\n", b"STARTTLS\r\n", b"BDAT 0 LAST\r\n", b"BDAT 0\r\n", b"BDAT\r\n", b"BDAT 3 MORE\r\n",
    b"QUIT\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", b"NOOP " + b"x" * 600 + b"\r\n",
]
BENIGN_LINES = [
    b"Subject: hi\r\n", b"From: a@b.test\r\n", b"X-Folded: a\r\n", b"\tcontinued\r\n", b"\r\n", b"\r\n",
    b"body text\r\n", b"..\r\n", b"..leading dot\r\n", b".single dot\r\n", "caf\u00e9 \u65e5\u672c\r\n".encode(),
    b"\xff\xfe binary\x00\r\n", b"x" * 998 + b"\r\n", b"MAIL FROM:<evil@x.test>\r\n", b" \r\n",
]
NASTY_LINES = [
    b".\r\n", b"\r\n.\r\n", b"x" * 999 + b"\r\n", b"\r\n" + b"y" * 1200 + b"\r\n", b"bare\nlf\r\n", b"bare\rcr\r\n",
    b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n", b"\n.\r", b"no line end",
    b"." + b"s" * 998 + b"\r\n", b"." + b"s" * 999 + b"\r\n", b".." + b"s" * 998 + b"\r\n", b"\r\r\n",
]
SMUGGLED = b"MAIL FROM:<admin@b.test>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"

body_lines = st.lists(st.one_of(st.sampled_from(BENIGN_LINES), st.sampled_from(BENIGN_LINES),
                                st.sampled_from(BENIGN_LINES), st.sampled_from(NASTY_LINES)), max_size=12).map(b"".join)
envelope = st.builds(
    lambda start, mail, rcpts: start + mail + b"".join(rcpts),
    st.sampled_from([b"", b"RSET\r\n", b"RSET\r\n", b"EHLO client.test\r\n"]),
    st.sampled_from([b"MAIL FROM:<a@b.test>\r\n", b"MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n",
                     "MAIL FROM:<j\u00f6s\u00e9@ex\u00e4mple.test> SMTPUTF8\r\n".encode()]),
    st.lists(st.sampled_from([b"RCPT TO:<u@example.com>\r\n", b"RCPT TO:<u@foreign.test>\r\n"]), min_size=1, max_size=4))
transaction = st.builds(lambda env, body, end: env + b"DATA\r\n" + body + end, envelope, body_lines,
                        st.sampled_from([b".\r\n", b".\r\n", b".\r\n", b"", SMUGGLED]))
content = st.one_of(body_lines, body_lines, st.binary(max_size=80))
bdat = st.builds(
    lambda chunks, last, delta: b"".join(b"BDAT %d%s\r\n" % (max(0, len(c) + (delta if i == 0 else 0)),
                                                              b" LAST" if last and i == len(chunks) - 1 else b"") + c
                                         for i, c in enumerate(chunks)),
    st.lists(content, min_size=1, max_size=4), st.sampled_from([True, True, False]),
    st.sampled_from([0, 0, 0, 0, 0, -1, 1, 3]))
bdat_transaction = st.builds(lambda env, chunks: env + chunks, envelope, bdat)
element = st.one_of(st.sampled_from(COMMANDS), transaction, bdat_transaction, st.sampled_from(COMMANDS), transaction,
                    bdat_transaction, bdat, st.sampled_from(BENIGN_LINES + NASTY_LINES), st.binary(max_size=40))
greeted = st.sampled_from([b"EHLO client.test\r\n", b"EHLO client.test\r\n", b"HELO client.test\r\n", b""])


def mutate(data, position, operation, extra):
    if not data:
        return extra
    position %= len(data)
    if operation == "flip":
        return data[:position] + bytes([data[position] ^ extra[0]]) + data[position + 1:]
    if operation == "insert":
        return data[:position] + extra + data[position:]
    if operation == "delete":
        return data[:position] + data[position + len(extra):]
    return data[:position]  # truncate


mutated = st.builds(mutate, element, st.integers(0, 1 << 16), st.sampled_from(["flip", "insert", "delete", "truncate"]),
                    st.binary(min_size=1, max_size=3))
cuts = st.lists(st.integers(0, 1 << 20), max_size=10)


def check(harnesses, normalize, strict, stream, pieces):
    harness = harnesses[normalize, strict]
    session, replies = harness.run(stream, pieces)
    model = Model(replies, harness.mail_params, normalize, strict)
    try:
        model.run(stream)
    except Ambiguous:
        assume(False)
    model.finish()
    assert model.replies == [], "replies the model did not expect: %s" % model.replies
    assert harness.queued == model.queued
    assert model.mail_params == []
    assert session.connection.hello == model.hello


FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@FUZZ
@given(normalize=st.booleans(), strict=st.booleans(), hello=greeted, elements=st.lists(element, min_size=1, max_size=20),
       pieces=cuts)
def test_grammar_streams_match_the_model(harnesses, normalize, strict, hello, elements, pieces):
    """Realistic streams (commands, whole transactions, BDAT chunks with right and wrong counts, smuggling
    fragments) in random pieces: well-formed replies, consistent state, and exactly the model's replies
    and queued messages."""
    check(harnesses, normalize, strict, hello + b"".join(elements), pieces)


@FUZZ
@given(normalize=st.booleans(), strict=st.booleans(), hello=greeted,
       elements=st.lists(st.one_of(mutated, element, st.binary(max_size=200)), min_size=1, max_size=20), pieces=cuts)
def test_mutated_streams_match_the_model(harnesses, normalize, strict, hello, elements, pieces):
    """The same grammar with flipped, inserted, deleted and truncated bytes and random binary in between:
    the session never raises and still agrees with the model."""
    check(harnesses, normalize, strict, hello + b"".join(elements), pieces)


@settings(max_examples=400, deadline=None)
@given(normalize=st.booleans(), strict=st.booleans(), stream=st.binary(max_size=3000), pieces=cuts)
def test_random_bytes_match_the_model(harnesses, normalize, strict, stream, pieces):
    """Pure random bytes after a greeting and an open transaction (so DATA and BDAT are reachable by chance):
    nothing raises, and the replies and the queue are what the model says."""
    prefix = b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\n"
    check(harnesses, normalize, strict, prefix + stream, pieces)


def test_model_knows_every_verb():
    """The model's verb list is the session's: a new verb must be taught to the model too."""
    assert set(Session.verbs) == VERBS


def test_overlong_command_line_is_one_500(harnesses):
    """A 13,000-octet command line, in one piece or in small pieces: one ``500 5.5.2``, then the next command."""
    stream = b"NOOP " + b"z" * 13000 + b"\r\nNOOP\r\n"
    for pieces in ([], list(range(1000, 14000, 1000))):
        session, replies = harnesses[False, False].run(stream, pieces)
        assert [(r.code, r.status) for r in replies] == [(500, "5.5.2"), (250, "2.0.0")]


OPEN = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.com>\r\n"
BINARY = b"EHLO c\r\nMAIL FROM:<a@b.test> BODY=BINARYMIME\r\nRCPT TO:<u@example.com>\r\n"
LINE_1000 = b"s" * 998 + b"\r\n"  # 1000 octets with its CRLF: the most RFC 5321 4.5.3.1.6 allows


@pytest.mark.parametrize("strict, stream, queued", [
    (False, OPEN + b"DATA\r\nSubject: x\r\n\r\n..a\r\n.\r\n", [b"Subject: x\n\n.a\n"]),
    (False, OPEN + b"BDAT 6 LAST\r\n..a\r\nb", [b"\n..a\nb\n"]),
    (False, OPEN + b"DATA\r\nSubject: x\r\n", []),
    # The transparency dot does not count: 1001 octets on the wire, 1000 in the message.
    (True, OPEN + b"DATA\r\n\r\n." + LINE_1000 + b".\r\n", [b"\n" + LINE_1000[:-2] + b"\n"]),
    (True, OPEN + b"DATA\r\n\r\n.." + LINE_1000 + b".\r\n", []),
    # BDAT adds no dot: a dot-led line of 1000 octets is within the limit, and kept as sent.
    (True, OPEN + b"BDAT 1002 LAST\r\n\r\n." + LINE_1000[1:], [b"\n." + LINE_1000[1:-2] + b"\n"]),
    (True, OPEN + b"BDAT 1003 LAST\r\n\r\n." + LINE_1000, []),
    (False, OPEN + b"BDAT 1003 LAST\r\n\r\n." + LINE_1000, [b"\n." + LINE_1000[:-2] + b"\n"]),
    # A BINARYMIME body is kept octet for octet, lone CR and LF and a missing last line end included.
    (True, BINARY + b"BDAT 14\r\nS: x\r\n\r\na\rb\n\r\nBDAT 4 LAST\r\n.\r\n\r",
     [b"S: x\n\r\na\rb\n\r\n.\r\n\r"]),
])
def test_model_spot_checks(harnesses, strict, stream, queued):
    """The model and the session agree on hand-written streams whose queued bytes are known, so neither can
    drift into agreeing on nothing."""
    check(harnesses, False, strict, stream, [])
    assert harnesses[False, strict].queued == queued
