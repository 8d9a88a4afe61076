"""bogus_bounce: refuse bounces that cannot be real.

A bounce (a delivery status notification, sent from the null sender
``MAIL FROM:<>``) goes back to the one sender of the failed message.  A
null-sender message to several recipients, or one whose header carries a
Return-Path other than ``<>``, is spam dressed as a bounce (backscatter).
Mail from any other sender is not looked at.

Arguments (qpsmtpd's)::

    bogus_bounce [log|deny|denysoft]
    bogus_bounce [action log|deny|denysoft] [reject 0|1|naughty] [reject_type perm|temp|...] [loglevel N]

``log`` (the default): only log the bogus bounce.  ``deny``: refuse it,
``552 5.7.1``.  ``denysoft``: refuse it temporarily, ``452 4.7.1``.
``reject`` and ``reject_type``, when given, win over the action.  The
replies::

    552 5.7.1 This bounce message does not have exactly one recipient
    552 5.7.1 A bounce message must have an empty Return-Path

Differences from qpsmtpd: there ``bogus_bounce deny`` only logged (its
``reject`` stayed 0 unless given); here ``deny`` refuses, as its
documentation says.  The reply texts are ours (qpsmtpd's began ``fail,``
and cited RFC 3834, which is about auto-replies).

Config files: none.
"""
from qpgevent import DECLINED, LOGINFO, arguments

ARGUMENTS = {"action": arguments.choice("log", "deny", "denysoft", default="log")}
POSITIONAL = ["action"]


def register(self, qp, *args):
    action = self.options.action
    if self.reject is None:
        self.reject = "0" if action == "log" else "1"
    if self.reject_type is None and action == "denysoft":
        self.reject_type = "temp"


def hook_data_post(self, transaction):
    if transaction.sender.address:
        self.log(LOGINFO, "pass, not a null sender")
        return DECLINED
    recipients = transaction.recipients
    if len(recipients) != 1:
        return self.get_reject("This bounce message does not have exactly one recipient",
                               "bogus bounce to %d recipients: %s" % (len(recipients), ", ".join(map(str, recipients))))
    return_path = (transaction.header.get("Return-Path") or "").strip()
    if return_path not in ("", "<>"):
        return self.get_reject("A bounce message must have an empty Return-Path",
                               "bounce with Return-Path %s" % return_path)
    self.log(LOGINFO, "pass, single recipient, empty Return-Path")
    return DECLINED
