"""badmailfrom: refuse envelope senders listed in config ``badmailfrom``, with a reason per line.

Arguments::

    badmailfrom [reject 1|0|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]

``reject 1`` (default) refuses the MAIL command: ``550 5.7.1`` with the
line's reason, or ``Your envelope sender is in my badmailfrom list``.
``reject 0`` only logs; ``reject naughty`` (qpsmtpd's sample configuration)
leaves the refusal to the ``naughty`` plugin.  A listed sender also costs the
connection a point of karma.

Config files:
  ``badmailfrom``  one entry a line, then an optional reason (the rest of the line)::

                       spammer@example.com
                       @spam.example       We do not take mail from spam.example
                       ^return.*@.*\\.pidplate\\.biz$   I don't want it regardless of subdomain

                   ``user@host`` is one address, ``@host`` every address at that
                   host, and an entry holding one of ``/ ^ $ * + ! % ? \\`` is a
                   regular expression searched for in the sender's ``user@host``
                   (anchor it with ``^`` and ``$`` to match the whole address).
                   The file is read again when it changes.

The null sender ``<>``, relay clients and whitelisted hosts and senders
(``whitelist``) are not checked.

Differences from qpsmtpd: a line that is neither an address, ``@host`` nor a
valid pattern stops the start-up naming the file and line (qpsmtpd logged it
at each MAIL and skipped it; one edited in while the server runs is still
logged and skipped).  Patterns ignore case (qpsmtpd lowercased the address
but not the pattern, so a pattern with capitals never matched) and are Python
regular expressions.  Hosts compare in their IDNA form too.
"""
from qpgevent import DECLINED, LOGDEBUG, LOGINFO, LOGWARN
from qpgevent.addresslist import check_entries, parse_rule, read_rules

ARGUMENTS = {}  # the generic ones only: anything else on the line is a start-up error
_REASON = "Your envelope sender is in my badmailfrom list"


def register(self, qp, *args):
    check_entries(self.smtpd.config.entries("badmailfrom"), parse_rule)


def hook_mail(self, transaction, sender, **params):
    if self.is_immune():
        return DECLINED
    if sender.is_null or not sender.host:
        self.log(LOGDEBUG, "skip, null sender or no host")
        return DECLINED
    rules = read_rules(self.qp.config_list("badmailfrom"), lambda text: self.log(LOGWARN, text))
    for rule in rules:
        if rule.matches(sender):
            self.adjust_karma(-1)
            return self.get_reject(rule.reason or _REASON, "%s matches %s" % (sender, rule.entry))
    self.log(LOGINFO, "pass")
    return DECLINED
