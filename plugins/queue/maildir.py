"""queue/maildir: deliver each accepted message into a Maildir, durably, before the 250.

Arguments (as in qpsmtpd)::

    queue/maildir [PATH]

``PATH`` is the maildir (default ``./Maildir``, relative to the working
directory); ``%d``, ``%u`` and ``%l`` in it expand per recipient to the domain,
the user and the whole address (lower case), giving one delivery per maildir.
Relative paths are taken from the directory the server was started in.

Delivery follows the Maildir protocol and makes it crash-safe: the message
is written to ``tmp/``, fsync'd, renamed into ``new/``, and the ``new/``
directory is fsync'd, all before the client hears 250.  Any failure removes the
file from ``tmp/`` and answers 451, so nothing half-written ever sits in
``new/``.  A ``Return-Path`` and a ``Delivered-To`` header are added.

Config files: none.
"""
import os
import socket
import time

from qpgevent import DECLINED, LOGERROR, LOGINFO, OK

_sequence = [0]


def register(self, qp, path="./Maildir", *extra):
    if extra:
        raise ValueError("takes one argument, the maildir path (got %d)" % (1 + len(extra)))
    self.maildir_template = os.path.abspath(path) if "%" not in path else path
    if "%" not in path:
        make_maildir(self.maildir_template)


def make_maildir(path):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)


def unique_name():
    _sequence[0] += 1
    now = time.time()
    return "%d.M%dP%dQ%d.%s" % (int(now), int((now % 1) * 1e6), os.getpid(), _sequence[0],
                                socket.gethostname().replace("/", "\\057").replace(":", "\\072"))


def maildirs_for(self, transaction):
    """The maildir of each recipient (one entry when the path has no % template)."""
    template = self.maildir_template
    if "%" not in template:
        return {template: [str(r.address) for r in transaction.recipients]}
    targets = {}
    for recipient in transaction.recipients:
        path = (template.replace("%l", recipient.address.lower()).replace("%d", (recipient.host or "").lower())
                .replace("%u", (recipient.user or "").lower()))
        if "/.." in "/" + path or "\0" in path:
            raise ValueError("recipient %s gives an unsafe maildir path" % recipient)
        targets.setdefault(os.path.abspath(path), []).append(recipient.address)
    return targets


def deliver(self, transaction, maildir, recipients):
    make_maildir(maildir)
    name = unique_name()
    tmp_path = os.path.join(maildir, "tmp", name)
    new_path = os.path.join(maildir, "new", name)
    head = "Return-Path: %s\nDelivered-To: %s\n" % (transaction.sender.format(), ", ".join(recipients))
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(head.encode("utf-8", "surrogateescape"))
            for block in transaction.message_blocks():
                handle.write(block)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp_path, new_path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except OSError:
            pass
        raise
    directory = os.open(os.path.join(maildir, "new"), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return name


def hook_queue(self, transaction):
    names = []
    try:
        for maildir, recipients in maildirs_for(self, transaction).items():
            names.append(deliver(self, transaction, maildir, recipients))
    except (OSError, ValueError) as exc:
        self.log(LOGERROR, "fail, maildir delivery: %s" % exc)
        return DECLINED, "Queuing failed, try again later"
    self.log(LOGINFO, "pass, queued as %s" % ", ".join(names))
    return OK, "Queued! %s" % names[0]
