"""noop_counter: disconnect a client after too many NOOPs in a row.

Arguments::

    noop_counter [MAX] [loglevel N]

``MAX`` (default 3): the NOOP that makes ``MAX`` in a row
gets ``500 5.5.1 Stop wasting my time, too many consecutive NOOPs`` and the
connection is closed.  Any other command in between starts the count again.

Config files: none.

Differences from qpsmtpd: the count is kept per connection (qpsmtpd kept it
on the plugin, shared by every client), and every other command resets it,
as qpsmtpd's documentation says (its code reset it only on HELO, EHLO, MAIL,
RCPT, DATA, RSET, VRFY and HELP, so AUTH or an unknown verb between NOOPs
did not).
"""
from qpgevent import DECLINED, DENY_DISCONNECT, LOGINFO, arguments

ARGUMENTS = {"max": arguments.integer(default=3, minimum=1)}
POSITIONAL = ["max"]


def hook_noop(self, transaction, *args):
    notes = self.qp.connection.notes
    command = self.qp.command_counter
    # The client's commands are numbered: a NOOP right after the last one counted continues the run.
    count, last = notes.get("noop_counter", (0, None))
    count = count + 1 if last == command - 1 else 1
    notes["noop_counter"] = (count, command)
    if count >= self.options.max:
        self.log(LOGINFO, "fail, %d NOOPs in a row" % count)
        return DENY_DISCONNECT, "Stop wasting my time, too many consecutive NOOPs"
    return DECLINED
