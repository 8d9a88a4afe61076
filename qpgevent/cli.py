"""Entry points of ``bin/qpsmtpd-server`` and ``bin/qpsmtpd``.

gevent must patch the standard library before anything imports socket, ssl,
subprocess, select, time or threading, so this module patches first and
imports the rest of qpgevent afterwards.
"""
import gevent
from gevent import monkey

monkey.patch_all()
# Nothing here reads a greenlet's spawning tree; recording it costs every connection CPU and memory.
gevent.config.track_greenlet_tree = False

import sys  # noqa: E402


def server_main() -> int:
    from .server import main
    return main()


def inetd_main() -> int:
    from .inetd import main
    return main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(server_main())
