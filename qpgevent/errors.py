"""Start-up errors that name the file, the line and the fix."""
from typing import Optional


class ConfigError(Exception):
    """Bad configuration found at start-up; the server refuses to start."""

    def __init__(self, message: str, path: Optional[str] = None, line: Optional[int] = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = path or ""
        if path and line:
            where = "%s:%d" % (path, line)
        super().__init__("%s: %s" % (where, message) if where else message)


class Disconnect(Exception):
    """Raised inside an SMTP command to end the session after the replies so far."""
