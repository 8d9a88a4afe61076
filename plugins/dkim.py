"""dkim: verify the DKIM signatures of incoming mail and sign mail from relay clients (RFC 6376).

Arguments (qpsmtpd's)::

    dkim [reject 1|0|naughty] [reject_type perm|temp] [loglevel N]

``reject 1`` (default, as qpsmtpd)
    Refuse a message whose signatures all failed to verify (``dkim=fail``:
    a changed body or header, a signature that does not match its key) with
    ``552 5.7.20 DKIM signature did not verify``; ``reject_type temp`` makes
    it 452 4.7.20.  A signature that is only unusable (no key published, a
    syntax error: ``permerror``, ``neutral``) costs a karma point but is
    never refused: qpsmtpd refused those only under an ADSP "sign all"
    policy, and ADSP is historic (RFC 5617; DMARC replaced it).  One
    passing signature makes the message pass, however many others fail.
``reject 0``
    Only record and log the results (qpsmtpd's ``config.sample`` line).
``reject naughty``
    Leave the refusal to the ``naughty`` plugin.

When a key lookup fails for now (DNS timeout, SERVFAIL: ``temperror``) and
no signature passed, the message gets ``452 4.4.3`` (qpsmtpd said "try
again later" too), never a permanent refusal; with ``reject 0`` it is only
logged.

Verifying.  Every ``DKIM-Signature`` (the first 10; RFC 6376 6.1 lets a
verifier stop there) is checked at ``data_post_headers``, as qpsmtpd does:
the last hook before the core writes its Authentication-Results, so each
result is in it: ``dkim=pass header.d=example.org header.s=dec2026
header.b=AbCd1234`` (RFC 6008: ``header.b`` tells signatures of one domain
apart).  Results: ``pass``; ``fail`` (signature or body hash did not verify);
``permerror`` (no key record, or none usable); ``neutral`` (a signature
that cannot be parsed); ``temperror`` (the key could not be fetched now);
an unsigned message gets ``dkim=none``.  The transaction note
``dkim_results`` lists ``{"domain": d=, "selector": s=, "result": ...}`` per
signature (empty when unsigned) for the ``dmarc`` plugin (list ``dkim`` before it).  A passing
message earns a karma point, a failing or unusable one loses one.  Keys
are fetched through the server's one resolver (``dns_servers``,
``dns_timeout``, its cache).  The refusal itself is made at ``data_post``:
the core ignores what ``data_post_headers`` returns (in qpsmtpd too, so
its ``reject 1`` never refused anything).  Relay clients and whitelisted
hosts or senders are not verified (``is_immune``), as in qpsmtpd.

Signing.  Mail from relay clients (``relay``, AUTH) is signed when its From
header's domain, else the envelope sender's domain, has a key under
``config/dkim/`` (qpsmtpd signed by the envelope sender only; DMARC
aligns on From, so From comes first).  The signature is made at
``queue_pre``, after every ``data_post`` plugin (a footer, a rewritten
subject) has changed the message, so those changes cannot break it;
qpsmtpd signed at ``data_post_headers``.  rsa-sha256, relaxed/relaxed as
qpsmtpd, over the header fields RFC 6376 5.4.1 recommends (From, To, Cc,
Subject, Date, Message-ID, Reply-To, the MIME and List-* fields, ...; never
Received or Return-Path), with From signed once more than it appears so
that no second From can be added.  A key that cannot be read is logged
and the message goes out unsigned, as in qpsmtpd.

Config files (qpsmtpd's layout; ``bin/qpsmtpd-dkim-keygen DOMAIN`` makes them):
  ``dkim/<domain>/selector``  the selector
  ``dkim/<domain>/private``   the RSA private key (PEM, PKCS#1 or PKCS#8)
  ``dkim/<alias> -> <domain>`` a symlink: sign <alias> mail with d=<domain>
A subdomain without a directory of its own uses its nearest parent's key.
"""
import re
from email.utils import getaddresses
from pathlib import Path
from typing import Dict, List, Optional

import dkim

from qpgevent import DECLINED, DENYSOFT, LOGERROR, LOGINFO, LOGWARN, arguments, dkim_speed
from qpgevent.dkimkeys import DKIM_DIR, KeyLookup, KeyProblem, SigningKey, key_directory, load_key

ARGUMENTS: Dict[str, arguments.Argument] = {}  # only the generic ones: anything else on the line is refused
MAX_SIGNATURES = 10
RESULTS_NOTE = "dkim_results"
_FAILED = "DKIM signature did not verify (#5.7.20)"
_TEMPORARY = "DKIM key lookup failed, try again later (#4.4.3)"
_TOKEN = re.compile(r"[!#-'*+\-.0-9A-Z^-~]+\Z")  # RFC 2045 token: a value that needs no quotes


def register(self, qp, *args):
    dkim_speed.install()  # dkimpy's body handling was most of a 100 KB message's CPU (see that module)


def hook_data_post_headers(self, transaction):
    if self.is_immune():
        return DECLINED
    # An unsigned message (most mail) is not read again.
    results = verify(self, b"".join(transaction.message_blocks())) if "DKIM-Signature" in transaction.header else []
    transaction.notes[RESULTS_NOTE] = [{k: r[k] for k in ("domain", "selector", "result")} for r in results]
    if not results:
        self.store_auth_results("dkim=none")
        self.log(LOGINFO, "skip, no signature")
    for r in results:
        self.store_auth_results(auth_result(r))
        self.log(LOGINFO, "%s, d=%s s=%s%s" % (r["result"], r["domain"], r["selector"],
                                              ": " + r["reason"] if r["reason"] else ""))
    return DECLINED


def hook_data_post(self, transaction):
    """The policy on what ``data_post_headers`` found: the core listens to ``data_post``."""
    found = {r["result"] for r in transaction.notes.get(RESULTS_NOTE) or ()}
    if not found:
        return DECLINED
    if "pass" in found:
        self.adjust_karma(1)
        return DECLINED
    if "temperror" in found:
        if self.reject == "0":
            self.log(LOGINFO, "temperror, tolerated")
            return DECLINED
        self.log(LOGINFO, "temperror, deferred")
        return DENYSOFT, _TEMPORARY
    self.adjust_karma(-1)
    if "fail" in found:
        return self.get_reject(_FAILED, "no signature verified")
    return DECLINED


def hook_queue_pre(self, transaction):
    if not self.connection.relay_client:
        return DECLINED
    key = signing_key(self, transaction)
    if key is None:
        return DECLINED
    message = b"".join(transaction.message_blocks())
    try:
        signature = dkim.sign(message, key.selector.encode(), key.domain.encode(), key.private,
                              canonicalize=(b"relaxed", b"relaxed"), linesep=b"\n")
    except dkim.DKIMException as exc:
        self.log(LOGERROR, "error, cannot sign for %s: %s; the message goes unsigned" % (key.domain, exc))
        return DECLINED
    name, _, value = signature.decode("ascii").partition(":")
    transaction.header.add(name, value.strip(), 0)
    self.log(LOGINFO, "pass, signed with d=%s s=%s" % (key.domain, key.selector))
    return DECLINED


def signing_key(self, transaction) -> Optional[SigningKey]:
    """The key for the From domain, else the envelope sender's, from config/dkim/; None (logged) if none."""
    dkim_dir = Path(self.smtpd.config.directory) / DKIM_DIR
    domains = [address.rpartition("@")[2] for _, address in getaddresses(transaction.header.get_all("From"))]
    if transaction.sender is not None and transaction.sender.host:
        domains.append(transaction.sender.host)
    for domain in filter(None, domains):
        directory = key_directory(dkim_dir, domain)
        if directory is None:
            continue
        try:
            return load_key(directory)
        except KeyProblem as exc:
            self.log(LOGERROR, "error, %s; the message goes unsigned" % exc)
            return None
    self.log(LOGINFO, "skip, no key in %s for %s" % (dkim_dir, ", ".join(filter(None, domains)) or "this sender"))
    return None


def verify(self, message: bytes) -> List[dict]:
    """One result per DKIM-Signature (the first MAX_SIGNATURES): domain, selector, b, result, reason."""
    lookup = KeyLookup(self.smtpd.dns)
    try:
        verifier = dkim.DKIM(message)
    except dkim.DKIMException as exc:  # a header line dkimpy cannot read
        return [{"domain": None, "selector": None, "b": None, "result": "neutral", "reason": str(exc)}]
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    if count > MAX_SIGNATURES:
        self.log(LOGWARN, "%d signatures; checking the first %d" % (count, MAX_SIGNATURES))
    return [check(verifier, index, lookup) for index in range(min(count, MAX_SIGNATURES))]


def check(verifier: "dkim.DKIM", index: int, lookup: KeyLookup) -> dict:
    """The result of signature ``index`` (0: the topmost), RFC 8601 2.7.1's words."""
    value = [v for name, v in verifier.headers if name.lower() == b"dkim-signature"][index]
    tags = lenient_tags(value)
    found = {"domain": tags.get("d", "").lower() or None, "selector": tags.get("s") or None,
             "b": "".join(tags.get("b", "").split())[:8] or None}
    try:
        verifier.verify_headerprep(index)
    except Exception as exc:  # noqa: BLE001 - dkimpy reads hostile input; any fault there is the signature's
        return dict(found, result="neutral", reason="unusable signature: %s" % exc)
    try:
        if verifier.verify(index, dnsfunc=lookup):
            return dict(found, result="pass", reason="")
    except dkim.ValidationError as exc:  # the body hash
        return dict(found, result="fail", reason=str(exc))
    except dkim.KeyFormatError as exc:  # a key too small to trust
        return dict(found, result="permerror", reason=str(exc))
    except Exception as exc:  # noqa: BLE001
        return dict(found, result="neutral", reason="%s: %s" % (type(exc).__name__, exc))
    trouble = lookup.outcome(found["selector"] or "", found["domain"] or "")
    reason = {"temperror": "key lookup failed for now", "permerror": "no usable key published"}
    return dict(found, result=trouble or "fail", reason=reason.get(trouble, "signature did not verify"))


def lenient_tags(value: bytes) -> Dict[str, str]:
    """``tag=value`` pairs of a signature, for reporting: whatever parses, never an error."""
    tags = {}
    for spec in value.decode("ascii", "replace").split(";"):
        key, eq, text = spec.partition("=")
        if eq:
            tags.setdefault(key.strip(), "".join(text.split()))
    return tags


def auth_result(result: dict) -> str:
    """``dkim=pass header.d=... header.s=... header.b=...`` for the Authentication-Results (reasons go to the log)."""
    parts = ["dkim=" + result["result"]]
    for prop, key in (("d", "domain"), ("s", "selector"), ("b", "b")):
        value = "".join(c for c in result[key] or "" if " " < c <= "~")  # the sender wrote it: printable only
        if value:
            parts.append("header.%s=%s" % (prop, value if _TOKEN.match(value) else
                                           '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')))
    return " ".join(parts)
