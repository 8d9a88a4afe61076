"""queue/maildir: durable, all-or-nothing Maildir delivery through real SMTP sessions."""
import errno
import os
import re
import smtplib
import stat

import pytest

from qpgevent.errors import ConfigError

CONFIG = {"rcpthosts": ["example.com", "other.test"]}
MESSAGE = (b"From: Alice <a@sender.test>\n"
           b"To: u@example.com\n"
           b"Subject: caf\xc3\xa9 \xe9t\xe9\n"
           b"X-Folded: first\n"
           b"  second\n"
           b"\n"
           b"line one\n"
           b".a line that starts with a dot\n"
           b"..two dots\n"
           b".\n"
           b"8-bit: \xff\xfe\x80 and UTF-8 \xe2\x82\xac\n"
           b"   trailing spaces   \n"
           b"last line\n")


def files(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def tree(root):
    """Every file below ``root`` (paths relative to it)."""
    found = set()
    for where, _, names in os.walk(root):
        found.update(os.path.relpath(os.path.join(where, name), root) for name in names)
    return found


def split_delivery(content):
    """(lines before Received, the Received field, the rest) of a delivered file."""
    match = re.match(rb"((?:Return-Path|Delivered-To): [^\n]*\n)+(Received: [^\n]*\n(?:[ \t][^\n]*\n)*)", content)
    assert match, content[:300]
    return content[:match.start(2)], match.group(2), content[match.end():]


def send(session, recipients, message=MESSAGE, sender="a@sender.test"):
    replies = session.send_message(sender, recipients, message)
    return replies[-1]


def test_message_is_delivered_byte_exact_with_envelope_headers(session_factory, tmp_path):
    """The file in new/ holds Return-Path, Delivered-To, Received, then the message byte for byte
    (dots unstuffed, 8-bit bytes untouched, LF line ends); tmp/ is left empty."""
    maildir = tmp_path / "Maildir"
    session = session_factory(plugins=["rcpt_ok", "queue/maildir %s" % maildir], config=CONFIG)
    reply = send(session, ["u@example.com", "v@other.test"])
    assert (reply.code, reply.status) == (250, "2.0.0")
    assert files(maildir / "tmp") == [] and files(maildir / "cur") == []
    [name] = files(maildir / "new")
    head, received, rest = split_delivery((maildir / "new" / name).read_bytes())
    assert head == b"Return-Path: <a@sender.test>\nDelivered-To: u@example.com\nDelivered-To: v@other.test\n"
    assert received.startswith(b"Received: from localhost (HELO client.test) (127.0.0.1)\n by mx.test ")
    assert rest == MESSAGE


def test_null_sender_and_large_spooled_message(session_factory, tmp_path):
    """A bounce gets ``Return-Path: <>``; a message big enough to be spooled to disk arrives intact."""
    maildir = tmp_path / "Maildir"
    session = session_factory(plugins=["rcpt_ok", "queue/maildir %s" % maildir], config=CONFIG)
    body = b"".join(b"%06d %s\n" % (n, bytes(range(128, 128 + 64))) for n in range(4000))
    message = b"Subject: big\n\n" + body
    session.command("EHLO client.test")
    session.command("MAIL FROM:<>")
    session.command("RCPT TO:<u@example.com>")
    assert session.data(message)[-1].code == 250
    [name] = files(maildir / "new")
    head, _, rest = split_delivery((maildir / "new" / name).read_bytes())
    assert head.startswith(b"Return-Path: <>\n")
    assert rest == message


def test_file_reaches_new_only_after_fsync_then_rename(session_factory, tmp_path, monkeypatch):
    """The copy is complete and fsync'd in tmp/ while new/ is still empty; then it is renamed
    into new/ and new/ itself is fsync'd, all before the 250."""
    maildir = tmp_path / "Maildir"
    session = session_factory(plugins=["rcpt_ok", "queue/maildir %s" % maildir], config=CONFIG)
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        path = os.readlink("/proc/self/fd/%d" % fd)
        if os.path.isdir(path):
            events.append(("fsync dir", path, files(path)))
        else:
            events.append(("fsync file", path, files(maildir / "new"), open(path, "rb").read()))
        real_fsync(fd)

    def rename(source, target):
        events.append(("rename", source, target))
        real_rename(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    reply = send(session, ["u@example.com"])
    assert reply.code == 250
    [name] = files(maildir / "new")
    tmp_file, new_file = str(maildir / "tmp" / name), str(maildir / "new" / name)
    assert [e[0] for e in events] == ["fsync file", "rename", "fsync dir"]
    assert events[0][1] == tmp_file and events[0][2] == [] and events[0][3].endswith(MESSAGE)
    assert events[1][1:] == (tmp_file, new_file)
    assert events[2][1:] == (str(maildir / "new"), [name])


def test_reply_names_the_queued_file(session_factory, tmp_path):
    """``250 2.0.0 Queued! <file>`` names the file in new/, so a log line can be matched to it."""
    maildir = tmp_path / "Maildir"
    session = session_factory(plugins=["rcpt_ok", "queue/maildir %s" % maildir], config=CONFIG)
    reply = send(session, ["u@example.com"])
    [name] = files(maildir / "new")
    assert reply.text == "2.0.0 Queued! %s" % name


def test_templates_deliver_one_copy_per_recipient_maildir(session_factory, tmp_path):
    """``%d/%l`` makes one maildir per recipient (lower case); recipients that map to the same
    maildir share one copy listing each of them in Delivered-To."""
    base = tmp_path / "spool"
    session = session_factory(plugins=["rcpt_ok", "queue/maildir %s %%d/%%l" % base], config=CONFIG)
    reply = send(session, ["a@example.com", "b@example.com", "c@other.test", "A@Example.COM"])
    assert reply.code == 250
    assert tree(base) == {"example.com/a/new/" + files(base / "example.com/a/new")[0],
                          "example.com/b/new/" + files(base / "example.com/b/new")[0],
                          "other.test/c/new/" + files(base / "other.test/c/new")[0]}
    head, _, rest = split_delivery((base / "example.com/a/new" / files(base / "example.com/a/new")[0]).read_bytes())
    assert head == b"Return-Path: <a@sender.test>\nDelivered-To: a@example.com\nDelivered-To: A@Example.COM\n"
    assert rest == MESSAGE
    names = sorted(files(base / "example.com/a/new") + files(base / "example.com/b/new") + files(base / "other.test/c/new"))
    assert re.fullmatch(r"2\.0\.0 Queued! (\S+) and 2 more", reply.text).group(1) in names


@pytest.mark.parametrize("template, expected", [
    ("%d", {"example.com": ["a@example.com", "b@example.com"], "other.test": ["c@other.test"]}),
    ("%u", {"a@example.com": ["a@example.com"], "b@example.com": ["b@example.com"], "c@other.test": ["c@other.test"]}),
    ("%l", {"a": ["a@example.com"], "b": ["b@example.com"], "c": ["c@other.test"]}),
])
def test_each_template_gives_every_recipient_its_own_copy(session_factory, tmp_path, template, expected):
    """``%d`` (domain), ``%u`` (whole address) and ``%l`` (local part), written in PATH itself: as in
    qpsmtpd every recipient gets a copy with its own Delivered-To, even two sharing a maildir (``%d``)."""
    base = tmp_path / "spool"
    session = session_factory(plugins=["rcpt_ok", "queue/maildir %s/%s" % (base, template)], config=CONFIG)
    assert send(session, ["a@example.com", "b@example.com", "c@other.test"]).code == 250
    assert sorted(os.listdir(base)) == sorted(expected)
    for maildir, addresses in expected.items():
        heads = sorted(split_delivery((base / maildir / "new" / name).read_bytes())[0]
                       for name in files(base / maildir / "new"))
        assert heads == [b"Return-Path: <a@sender.test>\nDelivered-To: %s\n" % a.encode() for a in addresses]


def test_recipient_without_domain_uses_me(session_factory, tmp_path):
    """``<postmaster>`` has no domain: ``%d`` becomes the ``me`` host name."""
    base = tmp_path / "spool"
    session = session_factory(plugins=["rcpt_ok", "queue/maildir %s %%d/%%l" % base], config=CONFIG)
    assert send(session, ["postmaster"]).code == 250
    assert len(files(base / "mx.test" / "postmaster" / "new")) == 1


@pytest.mark.parametrize("recipient", ['"../../x"@example.com', '"..@x"@example.com', "a/../../b@example.com",
                                       '"/etc/x"@example.com', "../../x@example.com", '".."@example.com'])
@pytest.mark.parametrize("template", ["%l", "%u", "%d/%l"])
def test_path_traversal_recipient_cannot_leave_the_base(session_factory, tmp_path, recipient, template):
    """Whatever the parser accepts as a local part, the copy lands inside the base directory:
    slashes and a leading dot are replaced, so no ``..`` component or absolute path results."""
    base = tmp_path / "area" / "spool"
    base.mkdir(parents=True)
    session = session_factory(plugins=["rcpt_ok", "queue/maildir %s %s" % (base, template)], config=CONFIG)
    before = tree(tmp_path)
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@sender.test>")
    rcpt = session.command("RCPT TO:<%s>" % recipient)[-1]
    if rcpt.code != 250:
        assert rcpt.code == 501  # the parser refused it: nothing can be delivered anywhere
        return
    assert session.data(MESSAGE)[-1].code == 250
    created = tree(tmp_path) - before
    delivered = [path for path in created if "/new/" in path]
    assert len(delivered) == 1
    for path in created:
        full = os.path.realpath(tmp_path / path)
        assert full.startswith(str(base) + os.sep), path
        assert not re.search(r"(^|/)\.", os.path.relpath(full, base)), path


def failing_fsync(kind):
    """An os.fsync that fails with EIO for files or for directories."""
    real_fsync = os.fsync

    def fsync(fd):
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        if is_dir == (kind == "dir"):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)
    return fsync


def break_tmp_dir(maildir):
    os.makedirs(maildir)
    (maildir / "tmp").write_text("a regular file where tmp/ should be\n")


@pytest.mark.parametrize("failure", ["tmp is a file", "fsync file", "rename", "fsync new dir"])
def test_any_failure_gives_451_and_leaves_nothing(session_factory, tmp_path, monkeypatch, failure):
    """Whatever step fails (tmp/ unusable, fsync of the copy, the rename, fsync of new/), the
    client gets 451 4.3.0 and neither new/ nor tmp/ keeps a file; the session goes on."""
    maildir = tmp_path / "Maildir"
    session = session_factory(plugins=["rcpt_ok", "queue/maildir %s" % maildir], config=CONFIG)
    if failure == "tmp is a file":
        os.rename(maildir / "tmp", tmp_path / "old-tmp")
        (maildir / "tmp").write_text("a regular file where tmp/ should be\n")
    elif failure == "fsync file":
        monkeypatch.setattr(os, "fsync", failing_fsync("file"))
    elif failure == "rename":
        def rename(source, target):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        monkeypatch.setattr(os, "rename", rename)
    else:
        monkeypatch.setattr(os, "fsync", failing_fsync("dir"))
    reply = send(session, ["u@example.com"])
    assert (reply.code, reply.status) == (451, "4.3.0")
    assert files(maildir / "new") == []
    assert files(maildir / "tmp") == []
    assert session.command("NOOP")[0].code == 250


def test_failure_of_one_maildir_takes_back_the_other_copies(session_factory, tmp_path):
    """With per-recipient maildirs, if one copy cannot be written, the copies already written
    for the other recipients are removed too: the 451 means nobody got the message."""
    base = tmp_path / "spool"
    session = session_factory(plugins=["rcpt_ok", "queue/maildir %s %%d/%%l" % base], config=CONFIG)
    assert send(session, ["a@example.com"]).code == 250
    (base / "example.com" / "a" / "new" / files(base / "example.com/a/new")[0]).unlink()
    break_tmp_dir(base / "other.test" / "c")
    reply = send(session, ["a@example.com", "b@example.com", "c@other.test"])
    assert (reply.code, reply.status) == (451, "4.3.0")
    assert [p for p in tree(base) if "/new/" in p or "/tmp/" in p] == []


def test_mode_sets_directory_and_file_permissions(session_factory, tmp_path):
    """MODE 750 creates directories 0750 and files 0640, whatever the umask."""
    base = tmp_path / "spool"
    old = os.umask(0o077)
    try:
        session = session_factory(plugins=["rcpt_ok", "queue/maildir %s %%d/%%l 750" % base], config=CONFIG)
        assert send(session, ["a@example.com"]).code == 250
    finally:
        os.umask(old)
    maildir = base / "example.com" / "a"
    for directory in (base / "example.com", maildir, maildir / "new", maildir / "tmp", maildir / "cur"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750, directory
    [name] = files(maildir / "new")
    assert stat.S_IMODE((maildir / "new" / name).stat().st_mode) == 0o640


@pytest.mark.parametrize("line, complaint", [
    ("queue/maildir /x sub", "has no %l, %d or %u"),
    ("queue/maildir /x %l 999", "three octal digits"),
    ("queue/maildir /x %l 700 extra", "at most three arguments"),
])
def test_bad_arguments_stop_start_up(smtpd_factory, line, complaint):
    """A SUBDIR without a template, a bad MODE or extra words refuse to start, saying why."""
    with pytest.raises(ConfigError, match=re.escape(complaint)):
        smtpd_factory(plugins=["rcpt_ok", line])


def test_live_server_delivers_per_recipient_with_smtplib(live_server, tmp_path):
    """End to end over TCP: smtplib sends one message to two domains; each recipient maildir
    holds one copy whose message part is what the client sent, and the 250 names a file."""
    base = tmp_path / "spool"
    server = live_server(plugins=["rcpt_ok", "queue/maildir %s %%d/%%l" % base],
                         config={"rcpthosts": ["example.com", "other.test"]})
    message = b"Subject: live\r\n\r\nhello\r\n.dot line\r\n\xe9\r\n"
    with smtplib.SMTP(*server.address, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail("a@sender.test")[0] == 250
        assert client.rcpt("u@example.com")[0] == 250
        assert client.rcpt("v@other.test")[0] == 250
        code, text = client.data(message)
    assert code == 250
    names = []
    for maildir in (base / "example.com" / "u", base / "other.test" / "v"):
        [name] = files(maildir / "new")
        names.append(name)
        _, _, rest = split_delivery((maildir / "new" / name).read_bytes())
        assert rest == message.replace(b"\r\n", b"\n")
        assert files(maildir / "tmp") == []
    assert re.fullmatch(rb"2\.0\.0 Queued! (\S+) and 1 more", text).group(1).decode() in names
