"""examples/refuse_recipient: refuse mail for one recipient address.

Arguments::

    examples/refuse_recipient ADDRESS

Mail to ``ADDRESS`` (compared without regard to case) is refused at RCPT with
``550 5.1.1``; every other recipient is left to the plugins that follow, so
list this one before ``rcpt_ok``.

Config files: none.
"""
from qpgevent import DECLINED, DENY, LOGINFO


def register(self, qp, *args):
    if len(args) != 1 or "@" not in args[0]:
        raise ValueError("takes one argument, the address to refuse, e.g. 'examples/refuse_recipient bob@example.com'")
    self.refused = args[0].strip("<>").lower()


def hook_rcpt(self, transaction, recipient, **params):
    if recipient.address.lower() != self.refused:
        return DECLINED
    self.log(LOGINFO, "fail, %s is refused" % recipient)
    return DENY, "Sorry, %s does not take mail here (#5.1.1)" % recipient
