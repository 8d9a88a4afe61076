"""queue/maildir: deliver each accepted message into a Maildir, durably, before the 250.

Arguments (as in qpsmtpd)::

    queue/maildir [PATH [SUBDIR [MODE]]]

``PATH`` is the maildir (default ``./Maildir``); relative paths are taken from
the directory the server was started in.  ``SUBDIR`` makes one maildir per
recipient under ``PATH``: in it (or in ``PATH`` itself) ``%l`` stands for the
local part, ``%d`` for the domain and ``%u`` for the whole address
``local@domain``, all in lower case; a recipient without a domain
(``<postmaster>``) gets the ``me`` host name::

    queue/maildir /var/spool/mail %d/%l       # /var/spool/mail/example.com/user
    queue/maildir /var/spool/mail/%u          # the same thing, one argument

With a template, as in qpsmtpd, every recipient gets a copy of its own,
with its own ``Delivered-To``, even when several share a maildir (``%d``:
two recipients of one domain give two files in that domain's maildir), so
whoever reads the maildir knows whom each copy is for.  Spellings of one
address that differ only in case are one recipient: one copy, a
``Delivered-To`` for each spelling.  Without a template the one copy lists
every recipient, one ``Delivered-To`` each.

``MODE`` is the octal permission of the directories the plugin creates
(default ``700``); files get the same without execute bits (``770`` gives
group-writable directories and ``0660`` files).

Before substitution every character of the address outside
``-A-Za-z0-9+_.,@=`` becomes ``_``, as in qpsmtpd, and a leading dot becomes
``_`` too: a recipient such as ``<"../../x"@example.com>`` cannot leave
``PATH`` nor create a hidden Maildir++ folder.

Delivery follows the Maildir protocol and is all or nothing: every copy is
written to ``tmp/`` and fsync'd, then renamed into ``new/``, and each ``new/``
directory is fsync'd, all before the client hears ``250 Queued! <file>``.  Any
failure removes every file this delivery made, in ``tmp/`` and in ``new/``,
and answers ``451 4.3.0``, so the client's retry cannot duplicate a copy.
The fsync calls run in gevent's thread pool: a slow disk delays this session
only, never the others.
Each file starts with ``Return-Path`` (the envelope sender, ``<>`` for a
bounce) and the ``Delivered-To`` lines, as qpsmtpd writes them; the message
follows byte for byte, with LF line ends.  A ``BODY=BINARYMIME`` message has
no LF form that keeps its octets: it is written exactly as received, CRLF
line ends (those of the added lines too).

Differences from qpsmtpd: the template values are lower-cased (qpsmtpd keeps
the client's case, so ``User@Example.COM`` and ``user@example.com`` would get
two maildirs); the ``Delivered-To`` lines of a shared copy are in recipient
order (qpsmtpd's come out reversed, each being prepended); delivery is
durable and all or nothing (below); the ``250`` names the file written
(qpsmtpd's names the Message-Id, which the sender chose and need not be
unique).

Config files: ``me`` (for recipients without a domain).
"""
import os
import re
import socket
import time

import gevent

from qpgevent import DECLINED, LOGERROR, LOGINFO, OK

_UNSAFE = re.compile(r"[^-A-Za-z0-9+_.,@=]")
_MODE = re.compile(r"[0-7]{3}\Z")
_sequence = [0]


def register(self, qp, path="./Maildir", subdir=None, mode="700", *extra):
    if extra:
        raise ValueError("takes at most three arguments, PATH [SUBDIR [MODE]] (got %d)" % (3 + len(extra)))
    if subdir is not None and not re.search("%[ldu]", subdir):
        raise ValueError("SUBDIR %r has no %%l, %%d or %%u; write e.g. '%%d/%%l'" % subdir)
    if not _MODE.match(mode):
        raise ValueError("MODE %r is not three octal digits; write e.g. 700 or 770" % mode)
    self.dir_mode = int(mode, 8)
    self.file_mode = self.dir_mode & 0o666
    self.maildir_template = os.path.abspath(os.path.join(path, subdir) if subdir else path)
    self.per_recipient = re.search("%[ldu]", self.maildir_template) is not None
    if not self.per_recipient:
        make_maildir(self, self.maildir_template)


def make_maildir(self, path):
    """Create the maildir and any missing parents with the configured mode, whatever the umask."""
    missing = []
    parent = path
    while not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for directory in reversed(missing):
        _make_dir(self, directory)
    for sub in ("tmp", "new", "cur"):
        directory = os.path.join(path, sub)
        if not os.path.isdir(directory):
            _make_dir(self, directory)


def _make_dir(self, directory):
    try:
        os.mkdir(directory, self.dir_mode)
    except FileExistsError:
        if not os.path.isdir(directory):
            raise
        return
    os.chmod(directory, self.dir_mode)


def safe_part(text):
    """An address part fit to be one path component: no slash, no leading dot."""
    text = _UNSAFE.sub("_", text.lower())
    return "_" + text[1:] if text.startswith(".") else text


def copies_for(self, transaction):
    """[(maildir, [recipient addresses for its Delivered-To])] in recipient order: with a template
    one copy per recipient (spellings differing only in case are one), else one copy for all."""
    copies = {}
    for recipient in transaction.recipients:
        path = self.maildir_template
        if self.per_recipient:
            local = safe_part(recipient.user or "")
            domain = safe_part(recipient.host or self.qp.me or "localhost")
            parts = {"l": local, "d": domain, "u": "%s@%s" % (local, domain)}
            path = re.sub("%([ldu])", lambda m: parts[m.group(1)], path)
        key = (path, recipient.address.lower() if self.per_recipient else None)
        path_and_addresses = copies.setdefault(key, (path, []))
        if recipient.address not in path_and_addresses[1]:
            path_and_addresses[1].append(recipient.address)
    return list(copies.values())


def unique_name():
    _sequence[0] += 1
    now = time.time()
    return "%d.M%dP%dQ%d.%s" % (int(now), int((now % 1) * 1e6), os.getpid(), _sequence[0],
                                socket.gethostname().replace("/", "\\057").replace(":", "\\072"))


def _fsync_result(fd):
    try:
        os.fsync(fd)
    except OSError as exc:
        return exc
    return None


def fsync(fd):
    """fsync in a worker thread: a slow disk then stalls this session only, not every session."""
    error = gevent.get_hub().threadpool.apply(_fsync_result, (fd,))
    if error is not None:
        raise error


def write_tmp(self, transaction, maildir, addresses, made):
    """Write one copy into ``maildir/tmp`` and fsync it; its paths go into ``made`` first."""
    make_maildir(self, maildir)
    name = unique_name()
    tmp_path = os.path.join(maildir, "tmp", name)
    new_path = os.path.join(maildir, "new", name)
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
    made.append((tmp_path, new_path))
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(fd, self.file_mode)  # the umask may have taken bits away
        newline = "\r\n" if transaction.binary else "\n"
        head = "Return-Path: %s%s" % (transaction.sender.format(), newline)
        head += "".join("Delivered-To: %s%s" % (address, newline) for address in addresses)
        handle.write(head.encode("utf-8", "surrogateescape"))
        for block in transaction.message_blocks():
            handle.write(block)
        handle.flush()
        fsync(handle.fileno())
    return name


def publish(made):
    """Rename every copy into ``new/``, then make the renames durable."""
    for tmp_path, new_path in made:
        os.rename(tmp_path, new_path)
    for directory in sorted({os.path.dirname(new_path) for _, new_path in made}):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fsync(fd)
        finally:
            os.close(fd)


def remove_all(self, made):
    for paths in made:
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                self.log(LOGERROR, "error, cannot remove %s after a failed delivery: %s" % (path, exc))


def hook_queue(self, transaction):
    made, names = [], []
    try:
        for maildir, addresses in copies_for(self, transaction):
            names.append(write_tmp(self, transaction, maildir, addresses, made))
        publish(made)
    except BaseException as exc:
        remove_all(self, made)
        if not isinstance(exc, Exception):
            raise  # the plugin timeout: the core answers it
        self.log(LOGERROR, "fail, maildir delivery: %s: %s" % (type(exc).__name__, exc))
        return DECLINED, "Queuing failed, try again later"
    self.log(LOGINFO, "pass, queued as %s" % ", ".join(names))
    more = " and %d more" % (len(names) - 1) if len(names) > 1 else ""
    return OK, "Queued! %s%s" % (names[0], more)
