"""logging/devnull: throw every log line away.

List it in ``config/logging`` to silence the server completely: with a
logging plugin loaded the core no longer writes to stderr, and this one
writes nowhere.  Its threshold is below every level, so the core drops
each line before formatting it.  Other logging plugins listed with it still
get the lines they ask for.

Arguments: none.  Config files: none.
"""
from qpgevent import DECLINED

ARGUMENTS = {}  # only the generic pairs, which mean nothing here


def register(self, qp, *args):
    self.log_threshold = -1  # no level is at or below it


def hook_logging(self, transaction, level, hook, plugin, message):
    return DECLINED
