"""badrcptto: refuse recipients listed in config ``badrcptto``; badmailfrom for recipients.

Arguments::

    badrcptto [reject 1|0|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]

as for every plugin (``get_reject``); qpsmtpd's badrcptto always refused.

Config files:
  ``badrcptto``  one entry a line, then an optional reason (the rest of the line)::

                     bad@example.com
                     @bad.example.com
                     !       Sorry, bang paths not accepted here
                     @.*@    Sorry, multiple at signs not accepted here

                 ``user@host`` is one address, ``@host`` every address at that
                 host, and an entry holding one of ``/ ^ $ * + ! % ? \\`` is a
                 regular expression searched for in the recipient's
                 ``user@host``, without regard to case.  The file is read
                 again when it changes.

A listed recipient is refused ``550 5.7.1`` with the line's reason, or, with
none, ``550 5.1.1 mail to <entry> not accepted here`` (as if it did not
exist), and costs the connection two points of karma.  Relay clients and
whitelisted hosts and senders are not checked.

Differences from qpsmtpd: a line that is neither an address, ``@host`` nor a
valid pattern stops the start-up naming the file and line (qpsmtpd logged it
and skipped it).  qpsmtpd lowercased a pattern before using it, which turned
``\\S`` into ``\\s``; patterns are used as written here (and are Python
regular expressions).  Hosts compare in their IDNA form too.
"""
from qpgevent import DECLINED, LOGDEBUG, LOGINFO, LOGWARN
from qpgevent.addresslist import check_entries, parse_rule, read_rules

ARGUMENTS = {}  # the generic ones only: anything else on the line is a start-up error


def register(self, qp, *args):
    check_entries(self.smtpd.config.entries("badrcptto"), parse_rule)


def hook_rcpt(self, transaction, recipient, **params):
    if self.is_immune():
        return DECLINED
    if not recipient.user or not recipient.host:
        self.log(LOGDEBUG, "skip, missing host or user")
        return DECLINED
    rules = read_rules(self.qp.config_list("badrcptto"), lambda text: self.log(LOGWARN, text))
    for rule in rules:
        if rule.matches(recipient):
            self.adjust_karma(-2)
            return self.get_reject(rule.reason or "5.1.1 mail to %s not accepted here" % rule.entry,
                                   "%s matches %s" % (recipient, rule.entry))
    self.log(LOGINFO, "pass")
    return DECLINED
