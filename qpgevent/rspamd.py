"""An rspamd client: ``POST /checkv2`` of its normal worker (rspamd's "protocol" documentation).

The message is the request body; the envelope and the client go in HTTP
headers (``IP``, ``Helo``, ``Hostname``, ``From``, one ``Rcpt`` per
recipient, ``Queue-Id``, ``User`` when authenticated).  The answer is JSON:
``action`` (``no action``, ``greylist``, ``add header``, ``rewrite
subject``, ``soft reject``, ``reject``), ``score``, ``required_score``,
``symbols``, and, for some actions, ``subject`` and ``messages.smtp_message``.
"""
import http.client
import json
from typing import Iterable, List, Tuple

from .scanning import ScanError, connect

DEFAULT_PORT = 11333
_MAX_REPLY = 4 * 1024 * 1024


class _Connection(http.client.HTTPConnection):
    """http.client over our ``connect``: a unix socket path or HOST[:PORT]."""

    def __init__(self, address: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = connect(self.address, DEFAULT_PORT, self.timeout)


def check(address: str, message: Iterable[bytes], length: int, fields: List[Tuple[str, str]],
          timeout: float) -> dict:
    """rspamd's verdict on the message (``length`` bytes in blocks) as a dict; ScanError when there is none."""
    connection = _Connection(address, timeout)
    try:
        connection.putrequest("POST", "/checkv2", skip_accept_encoding=True)
        for name, value in fields + [("Content-Length", str(length))]:
            connection.putheader(name, value)
        connection.endheaders()
        for block in message:
            connection.send(block)
        response = connection.getresponse()
        body = response.read(_MAX_REPLY)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise ScanError("rspamd at %s: %s" % (address, exc)) from exc
    finally:
        connection.close()
    if response.status != 200:
        raise ScanError("rspamd at %s answered HTTP %d: %s" % (address, response.status, body[:200]))
    try:
        verdict = json.loads(body)
    except ValueError as exc:
        raise ScanError("rspamd at %s: not JSON: %r" % (address, body[:200])) from exc
    if not isinstance(verdict, dict) or "action" not in verdict and not verdict.get("is_skipped"):
        raise ScanError("rspamd at %s: no action in %r" % (address, body[:200]))
    return verdict
