"""DKIM keys: ours on disk in qpsmtpd's layout, theirs in the DNS through the process resolver.

Our signing keys live as qpsmtpd keeps them, one directory per signing
domain under ``config/dkim/``::

    config/dkim/example.org/selector   the selector, one line (``dec2026``)
    config/dkim/example.org/private    the RSA private key, PEM
    config/dkim/client.example -> example.org   sign client.example mail with d=example.org

``KeyLookup`` is the ``dnsfunc`` dkimpy calls for public keys (DKIM and
ARC): it asks our one resolver (config ``dns_servers``, ``dns_timeout``,
cache) and remembers which keys could not be fetched now and which do not
exist, which dkimpy itself does not tell apart.
"""
import os
import re
import subprocess
import tempfile
import time
from base64 import b64encode
from pathlib import Path
from typing import Any, List, NamedTuple, Optional, Set

import dkim

from .address import domain_key

DKIM_DIR = "dkim"  # under the config directory
_DNS_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)+\Z")


class SigningKey(NamedTuple):
    domain: str  # the d= of the signature
    selector: str
    private: bytes  # PEM


class KeyProblem(Exception):
    """A key directory that cannot be used; the message names the file and the fix."""


def key_directory(dkim_dir: Path, domain: str) -> Optional[Path]:
    """The key directory for mail from ``domain``: its own, else the nearest parent domain's (None if neither).

    qpsmtpd kept looking up to the top-most parent; the nearest one is the
    key an admin made for that part of the tree.
    """
    labels = domain_key(domain).split(".")
    for start in range(len(labels) - 1):
        candidate = dkim_dir / ".".join(labels[start:])
        if candidate.is_dir():
            return candidate
    return None


def load_key(directory: Path) -> SigningKey:
    """The key in ``directory``; a symlinked directory signs with the name of the directory it points to."""
    domain = Path(os.path.realpath(directory)).name
    try:
        selector = (directory / "selector").read_text().split()
        private = (directory / "private").read_bytes()
    except OSError as exc:
        raise KeyProblem("cannot read %s: %s; create it with bin/qpsmtpd-dkim-keygen %s"
                         % (exc.filename, exc.strerror, domain)) from exc
    if not selector:
        raise KeyProblem("%s is empty; write the selector in it" % (directory / "selector"))
    return SigningKey(domain, selector[0], private)


class KeyLookup:
    """dkimpy's ``dnsfunc``: the TXT key record of ``selector._domainkey.domain`` from our resolver.

    ``temporary`` holds the names whose lookup timed out or failed (a retry
    may succeed: temperror), ``unusable`` those with no record or none that
    holds a key dkimpy can use (permerror).
    """

    def __init__(self, resolver: Any) -> None:
        self.resolver = resolver
        self.temporary: Set[str] = set()
        self.unusable: Set[str] = set()

    def __call__(self, name: Any, timeout: Optional[float] = None) -> Optional[bytes]:
        # The resolver's dns_timeout bounds the lookup, not dkimpy's timeout.
        text = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).rstrip(".").lower()
        if not _DNS_NAME.match(text):
            self.unusable.add(text)  # a selector or domain no DNS name can have: never ask, never retry
            return None
        result = self.resolver.txt(text)
        if result.temporary:
            self.temporary.add(text)
            raise dkim.DnsTimeoutError("%s: %s" % (text, result.status.value))
        for record in result.records:  # RFC 6376 3.6.2.2: take a record that holds a key
            data = record.encode("utf-8")
            try:
                dkim.evaluate_pk(text, data)
            except Exception:  # noqa: BLE001 - dkimpy raises several kinds for a bad record
                continue
            return data
        self.unusable.add(text)
        return result.records[0].encode("utf-8") if result.records else None

    def outcome(self, selector: str, domain: str) -> Optional[str]:
        """``temperror`` or ``permerror`` when the key of ``selector``/``domain`` was the trouble, else None."""
        name = ("%s._domainkey.%s" % (selector, domain)).rstrip(".").lower()
        if name in self.temporary:
            return "temperror"
        if name in self.unusable:
            return "permerror"
        return None


# -- making keys (bin/qpsmtpd-dkim-keygen) -------------------------------------------------
def default_selector() -> str:
    """qpsmtpd's selector form: month and year, ``dec2026``."""
    return time.strftime("%b%Y", time.gmtime()).lower()


def txt_strings(text: str, size: int = 255) -> List[str]:
    """``text`` cut into the character-strings of one TXT record (at most 255 octets each)."""
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def generate(dkim_dir: Path, domain: str, selector: Optional[str] = None, bits: int = 2048) -> Path:
    """Make ``dkim_dir/<domain>/{private,public,selector,dns}`` with ``openssl``; return that directory.

    The ``dns`` file holds the record to publish.

    ``openssl`` as qpsmtpd's dkim_key_gen.sh used it: no extra Python package.
    An existing key is never overwritten (FileExistsError).
    """
    domain = domain_key(domain)
    selector = selector or default_selector()
    if not _DNS_NAME.match("%s._domainkey.%s" % (selector.lower(), domain)):
        raise ValueError("%s._domainkey.%s is not a DNS name: use letters, digits, '-' and '_'" % (selector, domain))
    directory = dkim_dir / domain
    if (directory / "private").exists():
        raise FileExistsError("%s already exists; remove it first to make a new key" % (directory / "private"))
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".private.", delete=False) as scratch:
        pass
    try:
        os.chmod(scratch.name, 0o600)
        subprocess.run(["openssl", "genrsa", "-out", scratch.name, str(bits)], check=True, capture_output=True)
        public = subprocess.run(["openssl", "rsa", "-in", scratch.name, "-pubout", "-outform", "DER"],
                                check=True, capture_output=True).stdout
        os.replace(scratch.name, directory / "private")
    finally:
        if os.path.exists(scratch.name):
            os.unlink(scratch.name)
    (directory / "selector").write_text(selector + "\n")
    (directory / "public").write_text(pem("PUBLIC KEY", public))
    record = "v=DKIM1; k=rsa; p=%s" % b64encode(public).decode("ascii")
    (directory / "dns").write_text(dns_advice(domain, selector, record))
    return directory


def pem(label: str, der: bytes) -> str:
    body = b64encode(der).decode("ascii")
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (
        label, "\n".join(body[i:i + 64] for i in range(0, len(body), 64)), label)


def zone_line(domain: str, selector: str, record: str) -> str:
    """The key record as a zone file line (long keys split into several strings)."""
    return '%s._domainkey.%s. IN TXT %s' % (selector, domain, " ".join('"%s"' % s for s in txt_strings(record)))


def dns_advice(domain: str, selector: str, record: str) -> str:
    """The ``dns`` file: the record to publish, and the SPF and DMARC records that make it count."""
    return "\n".join([
        "Publish the DKIM public key (a zone file line; split strings are joined by resolvers):",
        "",
        "  " + zone_line(domain, selector, record),
        "",
        "Check it once published:  dig +short TXT %s._domainkey.%s" % (selector, domain),
        "",
        "Receivers trust the signature more when SPF and DMARC say this domain's mail is signed",
        "and comes from its own servers, for example:",
        "",
        '  %s. IN TXT "v=spf1 mx a -all"' % domain,
        '  _dmarc.%s. IN TXT "v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:postmaster@%s"' % (domain, domain),
        "",
        "Start DMARC with p=none while you watch the reports, then tighten it.",
        "",
    ])
