"""BDAT (RFC 3030 CHUNKING and BINARYMIME): octet-counted message chunks.

Mixed into ``Session``; a chunk's octets are read in the ``ChunkOctets``
mode (``modes.py``) and handed over here.
"""
import re
from typing import Optional

from . import replies as R
from .constants import DENY, DENY_DISCONNECT, DENYSOFT, DENYSOFT_DISCONNECT, DONE
from .data import ChunkReceiver
from .errors import Disconnect
from .modes import ChunkOctets
from .results import PluginFailure

_BDAT = re.compile(r"(\d{1,15})(?: +(LAST))? *\Z", re.IGNORECASE)


class ChunkingCommands:
    """The BDAT verb and the reading of its chunks."""

    def smtp_bdat(self, rest: str) -> None:
        found = _BDAT.match(rest)
        if not found:
            # Without a size we cannot know where the chunk ends: the rest would be misread.
            self.reply(R.BDAT_SYNTAX)
            raise Disconnect
        octets = ChunkOctets(int(found.group(1)), found.group(2) is not None)
        if self._chunk is None:
            self._chunk_error = self._bdat_refusal()
            if self._chunk_error is None:
                transaction = self.transaction
                transaction.binary = (transaction.notes["mail_parameters"].get("body") or "").upper() == "BINARYMIME"
                max_line = 0 if transaction.binary else self.smtpd.max_line_length
                self._chunk = ChunkReceiver(transaction, self.databytes(), max_line, self.headers_end)
        if octets.left:
            self.mode = octets
        else:
            self.end_chunk(octets)

    def _bdat_refusal(self) -> Optional[tuple]:
        """Why the first chunk of a transaction is refused, or None.

        The ``data`` hook decides as for DATA, but the answer waits until the
        chunk's octets are read: sent earlier, they would be read as commands.
        DONE means a plugin has answered (``reply`` None).
        """
        if self.transaction.sender is None:
            return R.DATA_NO_MAIL, (), False
        if not self.transaction.recipients:
            return R.DATA_NO_RCPT, (), False
        try:
            result = self.run_hooks("data")
        except PluginFailure:
            return R.PLUGIN_FAILED, (), False
        rc = result.rc
        if rc == DONE:
            return None, (), False
        if rc in (DENY, DENY_DISCONNECT):
            return R.DATA_DENY, result.messages, rc == DENY_DISCONNECT
        if rc in (DENYSOFT, DENYSOFT_DISCONNECT):
            return R.DATA_DENYSOFT, result.messages, rc == DENYSOFT_DISCONNECT
        return None

    def chunk_data(self, data: bytes) -> None:
        """Octets of the chunk being read; kept unless the transaction's chunks are being refused."""
        if self._chunk is not None and self._chunk_error is None:
            self._chunk.feed(data)

    def end_chunk(self, octets: ChunkOctets) -> None:
        """A chunk has been read whole: acknowledge it, refuse it, or end the message at LAST."""
        if self._chunk_error is not None:
            reply, messages, hang_up = self._chunk_error
            self._chunk_error = self._chunk = None
            if reply is not None:
                self.reply(reply, messages)
            self.end_transaction()
            if hang_up:
                raise Disconnect
            return
        chunk = self._chunk
        # RFC 3030 2: a chunk that takes the message past databytes is refused
        # then, not only at LAST; the transaction ends with it.
        over_size = chunk.over_size()
        if not (octets.last or over_size):
            self.reply(R.BDAT_OK, size=octets.size)
            return
        self._chunk = None
        if not over_size:
            chunk.finish()
        try:
            self.end_of_data(chunk.receiver)
        except PluginFailure:
            self.reply(R.PLUGIN_FAILED)
            self.end_transaction()
