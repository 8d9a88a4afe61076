"""examples/footer: add a footer to mail our own users send.

Arguments: none.

Config files:
  ``footer``  the footer text, one line per line (default: "Sent through <me>.")

Mail from a client at 127.0.0.1 (the webmail or the local submission
program on this host, say) gets a signature separator and the footer appended
to its body after the final dot, before it is queued.  Only plain-text bodies
are touched: text appended to a MIME multipart or to a base64 or
quoted-printable body would be hidden or would corrupt it.
"""
from qpgevent import DECLINED, LOGINFO

_PLAIN_ENCODINGS = ("", "7bit", "8bit")


def hook_data_post(self, transaction):
    if self.qp.connection.remote_ip != "127.0.0.1":
        return DECLINED
    header = transaction.header
    content_type = (header.get("Content-Type") or "text/plain").strip().lower()
    encoding = (header.get("Content-Transfer-Encoding") or "").strip().lower()
    if not content_type.startswith("text/plain") or encoding not in _PLAIN_ENCODINGS:
        self.log(LOGINFO, "skip, not a plain-text body")
        return DECLINED
    lines = self.qp.config_list("footer") or ["Sent through %s." % self.qp.me]
    # A message of headers only needs the blank line that starts a body.
    blank = "" if transaction.body_length else "\n"
    transaction.body_write(blank + "-- \n" + "".join(line + "\n" for line in lines))
    self.log(LOGINFO, "pass, footer added")
    return DECLINED
