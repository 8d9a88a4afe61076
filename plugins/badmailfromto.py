"""badmailfromto: refuse mail from one sender to one recipient, as if the recipient did not exist.

For harassment: the sender is not told it is blocked, only that the
recipient takes no mail (``550 5.1.1 mail to user@host not accepted here``).

Arguments: only the generic ``loglevel``.

Config files:
  ``badmailfromto``  one pair a line, sender then recipient, separated by white space::

                         stalker@example.net   victim@example.com
                         @harass.example       victim@example.com

                     The sender is an address or ``@host`` (every address at
                     that host); the recipient is an address.  Text after the
                     pair is ignored.  The file is read again when it changes.

At MAIL a listed sender is remembered in the transaction note
``badmailfromto`` (the entry that matched); each recipient paired with it is
then refused.  The null sender is not checked.

Differences from qpsmtpd: a line without both words, or with an entry that
is not an address (or ``@host`` for the sender), stops the start-up naming
the file and line (qpsmtpd skipped it).  Every line whose sender matches
counts (qpsmtpd kept only the last matching sender entry, so ``a@x`` and
``@x`` lines did not both work).  Hosts compare in their IDNA form too.
"""
from typing import List, Tuple

from qpgevent import DECLINED, DENY, LOGDEBUG, LOGINFO, LOGWARN
from qpgevent.addresslist import Rule, check_entries, parse_rule

ARGUMENTS = {}  # the generic ones only: anything else on the line is a start-up error


def parse_pair(line: str) -> Tuple[Rule, Rule]:
    """(sender rule, recipient rule) of a line; ValueError saying what to write."""
    words = line.split()
    if len(words) < 2:
        raise ValueError("%r needs a sender and a recipient, e.g. 'stalker@example.net victim@example.com'" % line)
    sender, recipient = parse_rule(words[0], patterns=False), parse_rule(words[1], patterns=False)
    if recipient.address is None:
        raise ValueError("the recipient %r must be a whole address, user@host" % words[1])
    return sender, recipient


def register(self, qp, *args):
    check_entries(self.smtpd.config.entries("badmailfromto"), parse_pair)


def pairs(self) -> List[Tuple[Rule, Rule]]:
    found = []
    for line in self.qp.config_list("badmailfromto"):
        try:
            found.append(parse_pair(line))
        except ValueError as exc:
            self.log(LOGWARN, "skipping a bad line: %s" % exc)
    return found


def hook_mail(self, transaction, sender, **params):
    if sender.is_null or not sender.host:
        return DECLINED
    for sender_rule, _ in pairs(self):
        if sender_rule.matches(sender):
            transaction.notes["badmailfromto"] = sender_rule.entry
            self.log(LOGINFO, "%s is listed, checking its recipients" % sender)
            break
    return DECLINED


def hook_rcpt(self, transaction, recipient, **params):
    if not transaction.notes.get("badmailfromto"):
        self.log(LOGDEBUG, "pass, sender not listed")
        return DECLINED
    for sender_rule, recipient_rule in pairs(self):
        if sender_rule.matches(transaction.sender) and recipient_rule.matches(recipient):
            self.log(LOGINFO, "fail, %s may not write to %s" % (transaction.sender, recipient))
            return DENY, "5.1.1 mail to %s not accepted here" % recipient.address
    self.log(LOGDEBUG, "pass, recipient not listed")
    return DECLINED
