"""Start-up errors and warnings that name the file, the line and the fix."""
from typing import Optional, Sequence


class _Located(Exception):
    """A message about the configuration, with the file and line it is about."""

    def __init__(self, message: str, path: Optional[str] = None, line: Optional[int] = None) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = path or ""
        if path and line:
            where = "%s:%d" % (path, line)
        super().__init__("%s: %s" % (where, message) if where else message)


class ConfigError(_Located):
    """Bad configuration found at start-up; the server refuses to start."""


class ConfigWarning(_Located):
    """Doubtful configuration found at start-up (e.g. no queue plugin): logged, and the server starts."""


class ConfigErrors(ConfigError):
    """Every error found in one pass over the configuration, and the warnings found beside them.

    Its path, line and message are those of the first error, so code that
    expects one ConfigError still reads something true.
    """

    def __init__(self, errors: Sequence[ConfigError], warnings: Sequence[ConfigWarning] = ()) -> None:
        self.errors = list(errors)
        self.warnings = list(warnings)
        first = self.errors[0]
        super().__init__(first.message, first.path, first.line)
        if len(self.errors) > 1:
            self.args = ("%d configuration errors:\n%s" % (len(self.errors), "\n".join("  %s" % e for e in self.errors)),)


class Disconnect(Exception):
    """Raised inside an SMTP command to end the session after the replies so far."""
