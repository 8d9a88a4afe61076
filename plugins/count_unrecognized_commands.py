"""count_unrecognized_commands: disconnect clients that keep sending commands we do not know.

Arguments::

    count_unrecognized_commands [N] [loglevel L]

``N`` (default 4) is the unrecognized command that ends the session: the
first ``N - 1`` get the usual ``500 5.5.1 Unrecognized command``, the ``N``th
gets ``521 5.5.1 Closing connection, N unrecognized commands. Perhaps you
should read RFC 5321?`` and the connection is closed.  Good against open
HTTP proxies relaying a web request to port 25.  The count lives in the
connection note ``unrec_cmd_count``.

List it after plugins that implement verbs through ``unrecognized_command``
(``tls`` for STARTTLS): a verb a plugin handled is not counted.  (qpsmtpd
pointed to RFC 2821, which RFC 5321 replaced in 2008, and only warned about
a bad argument; here a bad argument stops the start-up.)

Config files: none.
"""
from qpgevent import DECLINED, DENY_DISCONNECT, LOGINFO


def register(self, qp, *args):
    count, rest = (args[0], args[1:]) if args and args[0] != "loglevel" else ("4", args)
    if not count.isdigit() or int(count) < 1:
        raise ValueError("takes the number of unrecognized commands that closes the connection "
                         "(a whole number of 1 or more), not %r" % count)
    if rest and (len(rest) != 2 or rest[0] != "loglevel"):
        raise ValueError("unexpected arguments %r; the only ones are N and 'loglevel L'" % " ".join(rest))
    self.max_unrecognized = int(count)


def hook_unrecognized_command(self, transaction, verb, rest):
    notes = self.qp.connection.notes
    notes["unrec_cmd_count"] = count = notes.get("unrec_cmd_count", 0) + 1
    self.log(LOGINFO, "unrecognized command %r (%d of %d)" % (verb, count, self.max_unrecognized))
    if count >= self.max_unrecognized:
        message = "Closing connection, %d unrecognized commands." % count
        self.log(LOGINFO, "fail, " + message)
        return DENY_DISCONNECT, message + " Perhaps you should read RFC 5321?"
    return DECLINED
