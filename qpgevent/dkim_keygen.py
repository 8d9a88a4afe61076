"""``bin/qpsmtpd-dkim-keygen``: make a DKIM signing key for a domain (qpsmtpd's ``dkim_key_gen.sh``)."""
import argparse
import subprocess
from typing import List, Optional

from .config import Config
from .dkimkeys import DKIM_DIR, generate


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qpsmtpd-dkim-keygen",
        description="Write config/dkim/DOMAIN/{private,public,selector,dns} and print the DNS record to publish.")
    parser.add_argument("--config-dir",
                        help="config directory (default: $QPSMTPD_CONFIG, else config/ beside the install)")
    parser.add_argument("--bits", type=int, default=2048,
                        help="RSA key size (default 2048; 1024 is the least receivers accept)")
    parser.add_argument("domain", help="the signing domain, e.g. example.org")
    parser.add_argument("selector", nargs="?", help="the selector (default: month and year, as qpsmtpd: dec2026)")
    options = parser.parse_args(argv)
    if options.bits < 1024:
        parser.error("--bits %d: receivers refuse keys under 1024 bits" % options.bits)
    dkim_dir = Config(options.config_dir).directory / DKIM_DIR
    try:
        directory = generate(dkim_dir, options.domain, options.selector, options.bits)
    except (ValueError, FileExistsError) as exc:
        parser.exit(2, "qpsmtpd-dkim-keygen: %s\n" % exc)
    except subprocess.CalledProcessError as exc:
        parser.exit(1, "qpsmtpd-dkim-keygen: openssl failed: %s\n" % exc.stderr.decode(errors="replace").strip())
    except OSError as exc:  # no openssl command, a directory we may not write
        parser.exit(1, "qpsmtpd-dkim-keygen: %s\n" % exc)
    print("Key written to %s." % directory)
    print((directory / "dns").read_text(), end="")
    return 0
