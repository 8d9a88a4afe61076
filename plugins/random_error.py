"""random_error: fail a share of sessions at random, to test how clients (and your setup) cope.

Arguments::

    random_error [PERCENT] [loglevel N]

``PERCENT`` (default 1, at most 100): how many
messages in a hundred should fail on their way to the queue.  The chance is
spread over six stages (connect, HELO/EHLO, MAIL, RCPT, DATA and the end of
DATA) so that the six together fail that share.  A failure is ``DENYSOFT``
(``4xx random failure``) three times in five and ``DENYSOFT_DISCONNECT`` the
other two.  ``0`` or a negative number never fails.

Other plugins may change the rate of one connection by writing the
connection note ``random_fail_%`` (set to ``PERCENT`` at connect).

The randomness comes from the module's ``RANDOM`` (a ``random.Random``), so
a test can seed it.

Config files: none.

Differences from qpsmtpd: ``0`` never fails (qpsmtpd read it as the default,
1); a rate above 100 is a start-up error.
"""
import random

from qpgevent import DECLINED, DENYSOFT, DENYSOFT_DISCONNECT, LOGDEBUG, LOGINFO, arguments

ARGUMENTS = {"percent": arguments.number(default=1, maximum=100)}
POSITIONAL = ["percent"]
STAGES = 6
RANDOM = random.Random()


def random_fail(self, transaction, *args, **params):
    try:
        percent = float(self.qp.connection.notes.get("random_fail_%", self.options.percent))
    except (TypeError, ValueError):  # another plugin wrote something else: the configured rate holds
        percent = self.options.percent
    if percent <= 0:
        return DECLINED
    # Pass each stage with probability p, where p ** STAGES is the share that should pass all.
    keep = (1 - min(percent, 100) / 100) ** (1 / STAGES)
    if RANDOM.random() < keep:
        self.log(LOGDEBUG, "pass, below %.4f" % keep)
        return DECLINED
    code = DENYSOFT_DISCONNECT if RANDOM.random() < 2 / 5 else DENYSOFT
    self.log(LOGINFO, "fail, at random")
    return code, "random failure"


def hook_connect(self, transaction):
    self.qp.connection.notes["random_fail_%"] = self.options.percent
    return random_fail(self, transaction)


hook_helo = hook_ehlo = hook_mail = hook_rcpt = hook_data = hook_data_post = random_fail
