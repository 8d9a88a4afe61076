"""content_log: append every message to a file, for debugging filters or as an archive.

After the final dot (``data_post``) the message, header and body as a queue
would store them (with our ``Received`` line; LF line ends, or the client's
exact octets for ``BODY=BINARYMIME``), is appended to the file named by
``content_log_file``.  Messages follow one another with nothing between
them, as in qpsmtpd.  The plugin never refuses a message: if the file
cannot be written it logs why and the message goes on.

Config files:
  ``content_log_file``     the file, passed through strftime at each message
                           (default ``mail/%Y%m%d``: one file a day).  A
                           relative path is taken from the parent of the
                           config directory (qpsmtpd's home, where its
                           ``mail/`` was); missing directories are created
                           (mode 0700; the files are 0600: they hold mail)
  ``content_log_enabled``  ``true``, ``1`` or ``yes`` (the default when the
                           file is absent) to log; anything else turns the
                           plugin off.  Read at each message: no restart needed

Each message is written under an exclusive ``flock``, so the workers of
``--workers N`` never interleave two messages; a writer that cannot get the
lock within 2 seconds skips the message and logs it.

Arguments: only the generic ``loglevel``.

Differences from qpsmtpd: it read ``content_log_enabled`` once at start-up
and did not create directories or lock the file.
"""
import fcntl
import os
import time

import gevent

from qpgevent import DECLINED, LOGDEBUG, LOGWARN

ARGUMENTS = {}  # only the generic pairs
DEFAULT_FILE = "mail/%Y%m%d"
LOCK_WAIT = 2.0
_ENABLED = ("true", "1", "yes")


def hook_data_post(self, transaction):
    enabled = self.qp.config("content_log_enabled")
    if enabled is not None and enabled.strip().lower() not in _ENABLED:
        return DECLINED
    base = str(self.smtpd.config.directory.parent)
    path = os.path.join(base, time.strftime(self.qp.config("content_log_file") or DEFAULT_FILE))
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600), "ab") as out:
            if not locked(out):
                self.log(LOGWARN, "skip, %s stayed locked for %ss; message not logged" % (path, LOCK_WAIT))
                return DECLINED
            for block in transaction.message_blocks():
                out.write(block)
    except OSError as exc:
        self.log(LOGWARN, "skip, cannot write %s: %s" % (path, exc.strerror or exc))
        return DECLINED
    self.log(LOGDEBUG, "pass, message appended to %s" % path)
    return DECLINED


def locked(out):
    """Take ``out``'s exclusive lock, waiting at most LOCK_WAIT seconds without blocking other sessions."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            gevent.sleep(0.05)
