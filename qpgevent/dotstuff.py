"""Dot-stuffing for a queue that sends a stored message on with SMTP, LMTP or batched SMTP.

The message comes block by block (``transaction.message_blocks()``), so a
100 MB message is never held in memory: each block is stuffed as it passes,
remembering whether the previous block ended a line.
"""
from typing import Iterable, Iterator


def stuffed(blocks: Iterable[bytes], newline: bytes = b"\r\n") -> Iterator[bytes]:
    """``blocks`` with every line that starts with a dot given a second one, then the final dot line.

    A message whose last line has no line end gets ``newline`` first, so the
    terminating ``.`` stands on a line of its own (RFC 5321 4.5.2).
    """
    at_line_start = True
    for block in blocks:
        if not block:
            continue
        if at_line_start and block.startswith(b"."):
            block = b"." + block
        yield block.replace(b"\n.", b"\n..")
        at_line_start = block.endswith(b"\n")
    yield b"." + newline if at_line_start else newline + b"." + newline
