"""arc: verify the ARC chain of incoming mail and seal the mail we pass on (RFC 8617), with dkimpy.

A forwarder or mailing list that changes a message breaks its DKIM
signature; an ARC set (ARC-Seal, ARC-Message-Signature and
ARC-Authentication-Results) records what each hop found before it changed
anything, so the final receiver can still judge the mail.  qpsmtpd had no
ARC plugin; this one follows RFC 8617.

Arguments::

    arc [seal none|relay|all] [domain DOMAIN] [selector SELECTOR] [key PATH] [loglevel N]

``seal none`` (default)
    Verify only.
``seal relay``
    Also seal the mail of relay clients (a list server or forwarder that
    submits through us).
``seal all``
    Seal every message we accept: for a host that forwards the mail it
    receives.
``domain DOMAIN``
    The sealing domain (``d=`` of our ARC set).  Default: ``me``.  Its key is
    ``config/dkim/<domain>/`` (``selector`` and ``private``, the layout the
    ``dkim`` plugin signs with; a subdomain uses its nearest parent's key),
    made by ``bin/qpsmtpd-dkim-keygen``.
``key PATH`` with ``selector SELECTOR`` and ``domain DOMAIN``
    A private key file elsewhere.  ``selector`` alone overrides the one in
    ``config/dkim/<domain>/selector``.

Without a key, ``seal relay`` and ``seal all`` stop the start-up, naming the
directory to create.

Verifying runs at ``data_post_headers``, for every message: the last hook
before the core writes its Authentication-Results, so the result goes into
it: ``arc=pass``, ``arc=fail`` (a set that does not verify, or a chain an
earlier hop marked failed), ``arc=none`` (no ARC headers), or
``arc=temperror`` when a key could not be fetched now (DNS timeout,
SERVFAIL).  The transaction note ``arc_result`` holds the same word.  ARC
never refuses mail: RFC 8617 makes its result an input to local policy
(DMARC overrides), not a reason to reject by itself.  Keys are fetched
through the server's one resolver (``dns_servers``, ``dns_timeout``, cache).

Sealing runs at ``queue_pre``: after the core has written our
Authentication-Results, whose text (``trace.authentication_results``: AUTH,
SPF, DKIM, DMARC, ARC results) becomes the ARC-Authentication-Results and
whose ``arc=`` gives the seal's ``cv=``; after every ``data_post`` plugin has
changed the message, so the ARC-Message-Signature covers what goes out; and
after the ``dkim`` plugin has signed (list ``arc`` after ``dkim``).  A chain
whose check failed for now (``temperror``) is not sealed: a guessed ``cv``
would mislead every later hop.  A message without From cannot be sealed
(RFC 8617 4.1.2 requires From in the signature); that is logged.

Config files: ``dkim/<domain>/selector``, ``dkim/<domain>/private``
(qpsmtpd's DKIM layout, shared with the ``dkim`` plugin).
"""
from pathlib import Path

import dkim

from qpgevent import DECLINED, LOGERROR, LOGINFO, arguments, dkim_speed
from qpgevent.dkimkeys import DKIM_DIR, KeyLookup, KeyProblem, SigningKey, key_directory, load_key
from qpgevent.header import Header
from qpgevent.trace import AUTH_RESULTS, authentication_results, parse_authserv_id

ARGUMENTS = {
    "seal": arguments.choice("none", "relay", "all", default="none"),
    "domain": arguments.text(),
    "selector": arguments.text(),
    "key": arguments.text(),
}
RESULT_NOTE = "arc_result"
ARC_FIELDS = {name.decode() for name in dkim.ARC.ARC_HEADERS}  # lower case


def register(self, qp, *args):
    dkim_speed.install()  # as the dkim plugin does
    options = self.options
    if options.seal == "none":
        return
    if options.key:
        if not (options.selector and options.domain):
            raise ValueError("key %s needs selector and domain too, e.g. 'key %s selector dec2026 domain example.org'"
                             % (options.key, options.key))
        self.key_file = Path(options.key)
        load_key_file(self)  # an unreadable file stops the start-up
        return
    domain = options.domain or qp.config("me")
    dkim_dir = Path(self.smtpd.config.directory) / DKIM_DIR
    self.key_dir = key_directory(dkim_dir, domain)
    if self.key_dir is None:
        raise ValueError("seal %s needs a key: none in %s for %s or a parent domain; run "
                         "bin/qpsmtpd-dkim-keygen %s (and publish its DNS record), or give key PATH selector S domain D"
                         % (options.seal, dkim_dir, domain, domain))
    self.key_file = None
    sealing_key(self)  # a key directory without selector or private stops the start-up


def sealing_key(self) -> SigningKey:
    """Our key, read at each use so that a new key is used without a restart; KeyProblem if unusable."""
    if self.key_file is not None:
        return load_key_file(self)
    key = load_key(self.key_dir)
    return key._replace(selector=self.options.selector) if self.options.selector else key


def load_key_file(self) -> SigningKey:
    try:
        return SigningKey(self.options.domain, self.options.selector, self.key_file.read_bytes())
    except OSError as exc:
        raise KeyProblem("cannot read key %s: %s" % (self.key_file, exc.strerror)) from exc


def hook_data_post_headers(self, transaction):
    if not any(name.lower() in ARC_FIELDS for name, _ in transaction.header):
        return record(self, transaction, "none", 0, "")  # most mail: not read again
    lookup = KeyLookup(self.smtpd.dns)
    try:
        validation, sets, reason = dkim.ARC(b"".join(transaction.message_blocks())).verify(dnsfunc=lookup)
    except Exception as exc:  # noqa: BLE001 - dkimpy reads hostile input; whatever it trips on, the chain fails
        validation, sets, reason = dkim.CV_Fail, [], "%s: %s" % (type(exc).__name__, exc)
    # None: an earlier hop sealed with cv=fail, so the chain is over: a fail here too (RFC 8617 5.2).
    result = (validation or dkim.CV_Fail).decode()
    if result == "fail" and lookup.temporary:
        result, reason = "temperror", "key lookup failed for now: %s" % ", ".join(sorted(lookup.temporary))
    return record(self, transaction, result, len(sets), reason)


def record(self, transaction, result: str, sets: int, reason: str):
    """Note, Authentication-Results entry and log line for the chain's ``result``."""
    transaction.notes[RESULT_NOTE] = result
    self.store_auth_results("arc=" + result)
    self.log(LOGINFO, "%s, %d set%s%s" % (result, sets, "" if sets == 1 else "s",
                                        "" if result in ("pass", "none") else ": %s" % reason))
    return DECLINED


def hook_queue_pre(self, transaction):
    seal = self.options.seal
    if seal == "none" or (seal == "relay" and not self.connection.relay_client):
        return DECLINED
    if transaction.notes.get(RESULT_NOTE) == "temperror":
        self.log(LOGINFO, "skip, not sealing a chain we could not check")
        return DECLINED
    try:
        key = sealing_key(self)
        arc_set = dkim.arc_sign(sealing_input(self, transaction), key.selector.encode(), key.domain.encode(),
                                key.private, authserv_id(self).encode(), linesep=b"\n")
    except (KeyProblem, dkim.DKIMException) as exc:
        self.log(LOGERROR, "error, not sealed: %s" % exc)
        return DECLINED
    for field in reversed(arc_set):  # ARC-Seal ends up on top, then the AMS, then the AAR
        name, _, value = field.decode("ascii").partition(":")
        transaction.header.add(name, value.strip(), 0)
    self.log(LOGINFO, "pass, sealed with d=%s s=%s" % (key.domain, key.selector))
    return DECLINED


def authserv_id(self) -> str:
    """Ours, as the core writes it (``me-auth-results``, else ``me``); ``me`` when A-R is turned off."""
    configured = self.qp.config("me-auth-results")
    return configured if configured and configured != "none" else self.qp.me


def sealing_input(self, transaction) -> bytes:
    """The message with exactly one Authentication-Results of ours, the core's own text, for dkimpy to seal."""
    ours = authserv_id(self)

    def is_ours(name: str, value: str) -> bool:
        return name.lower() == AUTH_RESULTS.lower() and (parse_authserv_id(value) or "").lower() == ours.lower()

    header = Header([(name, value) for name, value in transaction.header.fields if not is_ours(name, value)])
    header.add(AUTH_RESULTS, authentication_results(self.qp, ours) or "%s; none" % ours, 0)
    return header.as_bytes() + b"".join(transaction.body_blocks())
