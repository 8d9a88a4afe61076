"""help: answer HELP from text files.

Arguments (pairs, as in qpsmtpd)::

    help [help_dir DIR] [not_implemented 0|1] [COMMAND FILE ...]

``help_dir DIR``
    Where the help texts are (default ``help``).  A relative path is taken
    from the directory that holds the config directory, so the default is
    ``help/`` beside ``config/``, where qpsmtpd kept it.
``not_implemented 1``
    Answer every HELP with ``502 5.5.1 Not implemented.``
``COMMAND FILE``
    Serve ``FILE`` (in the help directory) for ``HELP COMMAND``.

Files in the help directory:
  ``<command>``  (lower case, e.g. ``help/mail``) the text for ``HELP MAIL``
  ``default``    the text for a bare ``HELP``

Each line of a file becomes a line of the ``214 2.0.0`` reply.  Without a
``default`` file a bare HELP gets ``214 2.0.0 Try 'HELP COMMAND' for getting
help on COMMAND``.

Where this differs from qpsmtpd, on purpose: a topic with no help file
gets ``504 5.5.4 No help available for SMTP command: X`` (RFC 5321 4.3.2
lists 504 for HELP; qpsmtpd said 214), a topic that is not a word gets
``501 5.5.4 Invalid command name`` (qpsmtpd: 502, which means "not
implemented"), and a missing ``COMMAND FILE`` file stops the start-up
instead of being logged.  Files are read at each HELP, so edits need no
restart; at most 100 lines of printable ASCII are sent.
"""
import os
import re

from qpgevent import DONE, LOGERROR, OK

_TOPIC = re.compile(r"[A-Za-z0-9_-]+\Z")
MAX_LINES = 100


def register(self, qp, *args):
    if len(args) % 2:
        raise ValueError("arguments come in pairs, e.g. 'help_dir /etc/qpsmtpd/help' or 'not_implemented 1'")
    options = dict(zip(args[::2], args[1::2]))
    base = qp.config.directory.parent
    self.help_dir = os.path.join(base, options.pop("help_dir", "help"))
    self.not_implemented = options.pop("not_implemented", "0") not in ("0", "")
    options.pop("loglevel", None)
    self.files = {}
    for command, name in options.items():
        if not _TOPIC.match(command):
            raise ValueError("%r is not a command name" % command)
        path = os.path.join(self.help_dir, name)
        if not os.path.isfile(path):
            raise ValueError("no help file %s for command %s; create it or drop the argument" % (path, command))
        self.files[command.lower()] = path


def hook_help(self, transaction, rest):
    if self.not_implemented:
        self.qp.respond(502, "Not implemented.", status="5.5.1")
        return DONE
    words = rest.split()
    topic = words[0].lower() if words else "default"
    if not _TOPIC.match(topic):
        self.qp.respond(501, "Invalid command name", status="5.5.4")
        return DONE
    lines = read_help(self, self.files.get(topic) or os.path.join(self.help_dir, topic))
    if lines:
        return (OK, *lines)
    if not words:
        return OK, "Try 'HELP COMMAND' for getting help on COMMAND"
    self.qp.respond(504, "No help available for SMTP command: %s" % topic, status="5.5.4")
    return DONE


def read_help(self, path):
    """The printable lines of a help file; [] when there is none."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read(64 * 1024)
    except FileNotFoundError:
        return []
    except OSError as exc:
        self.log(LOGERROR, "cannot read help file %s: %s" % (path, exc.strerror))
        return []
    lines = ["".join(c for c in line.expandtabs(4) if " " <= c <= "~").rstrip() for line in text.splitlines()]
    return [line for line in lines if line][:MAX_LINES]
