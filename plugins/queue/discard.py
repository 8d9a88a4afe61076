"""queue/discard: accept every message and throw it away.

.. caution:: This plugin LOSES MAIL.  The client hears
   ``250 2.0.0 Queued (discarded)`` and the message is gone: nothing is
   stored, forwarded or bounced.  It exists to measure the server without a
   disk or a downstream MTA in the way (benchmarks, load tests); never list
   it in a configuration that receives real mail.

Arguments: none.

Config files: none.

A warning is logged when the plugin is loaded, so a configuration that uses
it by mistake shows up in the log at start-up.
"""
from qpgevent import LOGINFO, LOGWARN, OK


def register(self, qp, *args):
    if args:
        raise ValueError("takes no arguments (got %r)" % " ".join(args))
    self.log(LOGWARN, "every accepted message is thrown away: do not use this plugin for real mail")


def hook_queue(self, transaction):
    self.log(LOGINFO, "pass, discarded %d bytes from %s to %d recipient(s)"
             % (transaction.data_size, transaction.sender.format(), len(transaction.recipients)))
    return OK, "Queued (discarded)"
