"""``bin/qpsmtpd-state``: list, show and clear entries of the state store (qpsmtpd's ``karma_tool``)."""
import argparse
import sys
from typing import List, Optional

from .config import Config
from .state import StateUnavailable, open_store, store_url


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="qpsmtpd-state", description=__doc__.split("\n")[0].replace("``", ""))
    parser.add_argument("--config-dir", help="config directory (default: $QPSMTPD_CONFIG, else config/ beside the install)")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every key (starting with PREFIX), its value and seconds left")
    listing.add_argument("prefix", nargs="?", default="")
    show = commands.add_parser("show", help="one key's value and seconds left")
    show.add_argument("key")
    clear = commands.add_parser("clear", help="delete one key, or every key starting with --prefix")
    target = clear.add_mutually_exclusive_group(required=True)
    target.add_argument("key", nargs="?")
    target.add_argument("--prefix")
    options = parser.parse_args(argv)

    from .smtpd import spool_dir  # imported late: --help needs none of the daemon
    config = Config(options.config_dir)
    url, path, line = store_url(config, spool_dir(config))
    try:
        store = open_store(url)
    except ValueError as exc:
        parser.exit(2, "qpsmtpd-state: %s%s\n" % ("%s:%d: " % (path, line) if path else "", exc))
    try:
        if options.command == "list":
            for key, value in sorted(store.scan(options.prefix)):
                print("%s\t%s\t%s" % (key, value, _left(store.ttl(key))))
        elif options.command == "show":
            value = store.get(options.key)
            if value is None:
                print("%s: no such key" % options.key, file=sys.stderr)
                return 1
            print("%s\t%s\t%s" % (options.key, value, _left(store.ttl(options.key))))
        elif options.prefix is not None:
            keys = [key for key, _ in store.scan(options.prefix)]
            cleared = sum(store.delete(key) for key in keys)
            print("cleared %d keys starting with %r" % (cleared, options.prefix))
        else:
            if not store.delete(options.key):
                print("%s: no such key" % options.key, file=sys.stderr)
                return 1
            print("cleared %s" % options.key)
    except StateUnavailable as exc:
        print("qpsmtpd-state: %s" % exc, file=sys.stderr)
        return 1
    return 0


def _left(seconds: Optional[float]) -> str:
    return "expired" if seconds is None else "%ds" % round(seconds)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
