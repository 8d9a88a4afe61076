"""virus/klez_filter: refuse the Klez worm (2002), by qpsmtpd's old heuristic.

A message of at least 60,000 bytes is refused when, within the first 41
lines of its body, a line starting ``Content-Type:`` naming an ``audio``
or ``application`` type is followed by a line that starts with the base64
form of a Windows executable's header (``TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQA``)::

    552 5.7.1 Klez Virus Detected

Smaller messages and the rest of the body are not read.  Klez is long
extinct; the plugin is here because qpsmtpd's sample configuration lists
it.  For real virus scanning use a scanner plugin.

Arguments: only the generic ones (``reject 0`` logs instead of refusing,
``reject_type temp`` refuses with 452).

Config files: none.
"""
import re

from qpgevent import DECLINED

ARGUMENTS = {}  # only the generic pairs
MIN_SIZE = 60000
LINES_READ = 41
_PART_TYPE = re.compile(r"Content-type:.*(?:audio|application)", re.IGNORECASE)
_EXECUTABLE = "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQA"


def hook_data_post(self, transaction):
    if transaction.data_size < MIN_SIZE:
        return DECLINED
    transaction.body_resetpos()
    seen_part = False
    for _ in range(LINES_READ):
        line = transaction.body_getline()
        if line is None:
            break
        if _PART_TYPE.match(line):
            seen_part = True
        elif seen_part and line.startswith(_EXECUTABLE):
            return self.get_reject("Klez Virus Detected", "base64 executable after an audio/application part")
    return DECLINED
