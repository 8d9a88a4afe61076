"""tls: STARTTLS (RFC 3207) and implicit TLS on an smtps listener (RFC 8314).

Arguments (as in qpsmtpd)::

    tls [CERT [KEY [CA [DHPARAM]]]]

``CERT`` and ``KEY`` are PEM files; ``CA`` is an optional PEM file of CA
certificates from which the chain sent with ``CERT`` is built
(intermediates); ``DHPARAM`` a PEM file of Diffie-Hellman parameters, which
the ``DHE`` ciphers need (``ECDHE`` ones do not).  Relative paths are taken
from the config directory.  Without arguments the files are
``qpsmtpd-server.crt``, ``qpsmtpd-server.key`` and, if it is there and not
empty, ``qpsmtpd-dhparam.pem`` in the first of these that has the
certificate: ``ssl/`` in the config directory (where ``bin/qpsmtpd-tls-cert``
writes), ``ssl/`` beside the config directory and ``./ssl/`` (where qpsmtpd's
``plugins/tls_cert`` writes).  A file that is missing or does not load stops
the start-up.

qpsmtpd's config files (one line each):

  ``tls_ciphers``    an OpenSSL cipher string for TLS 1.2 (``HIGH:!SSLv2``...);
                     TLS 1.3 suites are all AEAD and always on
  ``tls_protocols``  IO::Socket::SSL's protocol list, e.g. ``SSLv23:!SSLv2:!SSLv3:!TLSv1``:
                     of what it enables, TLSv1_2 and TLSv1_3 are spoken; older
                     protocols never are, and a list with neither stops the start-up

Without ``tls_ciphers`` TLS 1.2 offers only forward-secret AEAD suites
(ECDHE or DHE with AES-GCM or ChaCha20-Poly1305): no CBC suite, whose
padding is what LUCKY13 attacks, and no RSA key exchange.

Config file ``tls.ini`` (all optional)::

    min_version = TLSv1_2        # or TLSv1_3; older protocols are never spoken
    ciphers = ECDHE+AESGCM:...   # OpenSSL cipher string for TLS 1.2; wins over tls_ciphers
    handshake_timeout = 10       # seconds a client has to finish the handshake
    smtps_ports = 465            # local ports that speak TLS from the first byte (a list: 465, 10465)
    client_certificates = none   # or optional: ask clients for a certificate signed by client_ca
    client_ca = ssl/clients.crt  # default: the CA argument of the tls line

With ``client_certificates = optional`` a client that presents a certificate
signed by ``client_ca`` has it (as ``ssl.getpeercert()`` gives it) in the
connection note ``tls_peer_certificate``; one that presents none still gets
in, and one with a bad certificate fails the handshake.

``handshake_timeout`` must stay below ``plugin_timeout`` (default 30 s): the
handshake runs inside a hook.  A listener given with ``--smtps-listen`` is
implicit TLS too, whatever its port.  List this plugin before every other
``connect`` plugin: on an smtps port it must speak TLS before anyone else
says a word.

What it does: EHLO offers ``STARTTLS`` until TLS is up; ``STARTTLS`` answers
``220 2.0.0``, throws away anything the client pipelined after the command
(CVE-2011-0411, plaintext injection), does the handshake, and then forgets
the HELO and the transaction: the client must EHLO again, and STARTTLS is no
longer offered (a second STARTTLS gets 503, one with an argument 501).  A
client that does not finish the handshake in time, or fails it, is
disconnected; on an smtps listener it never sees a greeting.  The connection
notes get ``tls_enabled``, ``tls_version``, ``tls_cipher`` and
``tls_peer_certificate``; Received says ``ESMTPS`` and the cipher.  A SIGHUP
reloads the certificate with the rest of the config (new connections get it).
"""
import os
import ssl
from pathlib import Path

from qpgevent import DECLINED, DONE, LOGINFO, LOGNOTICE

_AEAD_ONLY = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!DSS"
# IO::Socket::SSL's protocol names (lower case, no underscores) -> what we could speak of them.
_PROTOCOLS = {"sslv2": set(), "sslv3": set(), "tlsv1": set(), "tlsv11": set(),
              "tlsv12": {ssl.TLSVersion.TLSv1_2}, "tlsv13": {ssl.TLSVersion.TLSv1_3},
              "sslv23": {ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3}}
_PROTOCOLS["sslv2/3"] = _PROTOCOLS["sslv23"]  # an older spelling of SSLv23

SPEC = """
min_version = option('TLSv1_2', 'TLSv1_3', default='TLSv1_2')
ciphers = string(default='')
handshake_timeout = float(min=1, max=600, default=10)
smtps_ports = force_list(default=list("465"))
client_certificates = option('none', 'optional', default='none')
client_ca = string(default='')
"""


def register(self, qp, cert=None, key=None, ca=None, dhparam=None, *extra):
    if extra:
        raise ValueError("takes at most four arguments: CERT KEY CA DHPARAM")
    settings = self.config_ini("tls", SPEC)
    ini = qp.config.path("tls.ini") or "tls.ini"
    plugin_timeout = qp.plugin_timeout
    if plugin_timeout and settings["handshake_timeout"] >= plugin_timeout:
        raise ValueError("%s: handshake_timeout = %g is not below plugin_timeout (%g s), which would cut the "
                         "handshake short; lower handshake_timeout or raise plugin_timeout"
                         % (ini, settings["handshake_timeout"], plugin_timeout))
    base = str(qp.config.directory)
    if cert is None:
        cert, key, dhparam = default_files(qp.config.directory)
    elif key is None:
        key = "ssl/qpsmtpd-server.key"
    paths = [os.path.join(base, p) if p and not os.path.isabs(p) else p for p in (cert, key, ca, dhparam)]
    for path in filter(None, paths):
        if not os.path.isfile(path):
            raise ValueError("%s does not exist; make a certificate with bin/qpsmtpd-tls-cert or fix the path "
                             "on the tls line" % path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version, context.maximum_version = protocol_range(qp, settings["min_version"])
    set_ciphers(context, qp, settings["ciphers"], ini)
    try:
        context.load_cert_chain(paths[0], paths[1])
        if paths[2]:
            context.load_verify_locations(paths[2])
    except (ssl.SSLError, OSError) as exc:
        raise ValueError("cannot load certificate %s with key %s%s: %s; check that both are PEM files and that "
                         "the key belongs to the certificate"
                         % (paths[0], paths[1], " and CA file %s" % paths[2] if paths[2] else "", exc)) from None
    if paths[3]:
        try:
            context.load_dh_params(paths[3])
        except (ssl.SSLError, OSError) as exc:
            raise ValueError("cannot load DH parameters %s: %s; make them with 'openssl dhparam -out %s 2048'"
                             % (paths[3], exc, paths[3])) from None
    if settings["client_certificates"] == "optional":
        client_ca = settings["client_ca"] or paths[2]
        if not client_ca:
            raise ValueError("%s: client_certificates = optional needs client_ca (the CA that signs client "
                             "certificates) or a CA argument on the tls line" % ini)
        client_ca = os.path.join(base, client_ca) if not os.path.isabs(client_ca) else client_ca
        try:
            context.load_verify_locations(client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError("%s: cannot load client_ca %s: %s" % (ini, client_ca, exc)) from None
        context.verify_mode = ssl.CERT_OPTIONAL  # ask; a client without one still gets in
    self.context = context
    self.handshake_timeout = settings["handshake_timeout"]
    try:
        self.smtps_ports = {int(port) for port in settings["smtps_ports"]}
    except ValueError:
        raise ValueError("tls.ini: smtps_ports must be port numbers, e.g. 465 or 465, 10465") from None


def default_files(config_dir):
    """qpsmtpd's default certificate, key and (if there and not empty) DH parameters: the first ssl/ that has them."""
    places = [config_dir / "ssl", config_dir.parent / "ssl", Path.cwd() / "ssl"]
    for place in places:
        if (place / "qpsmtpd-server.crt").is_file():
            dhparam = place / "qpsmtpd-dhparam.pem"
            has_dh = dhparam.is_file() and dhparam.stat().st_size > 0
            return str(place / "qpsmtpd-server.crt"), str(place / "qpsmtpd-server.key"), str(dhparam) if has_dh else None
    raise ValueError("no certificate: none of %s has qpsmtpd-server.crt; make one with bin/qpsmtpd-tls-cert or "
                     "give CERT and KEY on the tls line" % ", ".join(str(place) for place in places))


def protocol_range(qp, min_version):
    """(minimum, maximum) TLS version from tls.ini's ``min_version`` and qpsmtpd's ``tls_protocols``."""
    spoken = {ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3}
    entries = qp.config.entries("tls_protocols")
    if entries:
        where = "%s:%d" % (entries[0].path, entries[0].line)
        spoken &= enabled_protocols(entries[0].value, where)
        if not spoken:
            raise ValueError("%s: %r enables neither TLSv1_2 nor TLSv1_3, the only protocols this server speaks; "
                             "e.g. write 'SSLv23:!SSLv2:!SSLv3'" % (where, entries[0].value))
    lowest = max(min(spoken), getattr(ssl.TLSVersion, min_version))
    highest = max(spoken)
    if lowest > highest:
        raise ValueError("tls.ini min_version = %s is above every protocol tls_protocols leaves on" % min_version)
    return lowest, highest


def enabled_protocols(text, where):
    """The TLS versions an IO::Socket::SSL ``SSL_version`` string (``SSLv23:!SSLv2:!SSLv3``) turns on."""
    on, off = set(), set()
    for word in filter(None, text.split(":")):
        name = word.lstrip("!").replace("_", "").lower()
        if name not in _PROTOCOLS:
            raise ValueError("%s: unknown protocol %r in tls_protocols; use SSLv23, TLSv1, TLSv1_1, TLSv1_2, "
                             "TLSv1_3, each optionally with ! to turn it off" % (where, word))
        (off if word.startswith("!") else on).update(_PROTOCOLS[name])
    return on - off


def set_ciphers(context, qp, ini_ciphers, ini):
    """tls.ini ``ciphers``, else qpsmtpd's ``tls_ciphers``, else AEAD suites with forward secrecy only."""
    entries = qp.config.entries("tls_ciphers")
    if ini_ciphers:
        ciphers, where = ini_ciphers, "%s: ciphers = %r" % (ini, ini_ciphers)
    elif entries:
        ciphers, where = entries[0].value, "%s:%d: %r" % (entries[0].path, entries[0].line, entries[0].value)
    else:
        ciphers, where = _AEAD_ONLY, "the default ciphers"
    try:
        context.set_ciphers(ciphers)
    except ssl.SSLError:
        raise ValueError("%s selects no cipher; fix the OpenSSL cipher string (see 'openssl ciphers -v STRING') "
                         "or remove it" % where) from None


def tls_active(qp):
    return bool(qp.connection.notes.get("tls_enabled"))


def hook_connect(self, transaction):
    connection = self.qp.connection
    if connection.local_port not in self.smtps_ports and not connection.notes.get("smtps"):
        return DECLINED
    if not handshake(self):
        # No reply: a plaintext line would be garbage to a TLS client, and an
        # SMTP greeting must never reach a client that skipped TLS here.
        self.qp.disconnect()
        return DONE
    return DECLINED


def hook_ehlo(self, transaction, host, *extra):
    if not tls_active(self.qp):
        transaction.notes.setdefault("capabilities", []).append("STARTTLS")
    return DECLINED


def hook_unrecognized_command(self, transaction, verb, rest):
    if verb != "starttls":
        return DECLINED
    qp = self.qp
    if rest:
        qp.respond(501, "Syntax error (no parameters allowed)", status="5.5.4")
    elif tls_active(qp):
        qp.respond(503, "TLS is already active", status="5.5.1")
    elif not qp.connection.hello:
        qp.respond(503, "EHLO first", status="5.5.1")
    else:
        qp.respond(220, "Ready to start TLS", status="2.0.0")
        if not handshake(self, starttls=True):
            qp.disconnect()
    return DONE


def handshake(self, starttls=False):
    """Do the server side of the TLS handshake; False (logged) if it failed."""
    qp = self.qp
    try:
        qp.start_tls(self.context, self.handshake_timeout, reset=starttls)
    except OSError as exc:
        # Labelled starttls, not with the hook the command arrives through (unrecognized_command).
        self.log(LOGNOTICE, "fail, TLS handshake with %s: %s" % (qp.connection.remote_ip, exc),
                 hook="starttls" if starttls else None)
        return False
    notes = qp.connection.notes
    self.log(LOGINFO, "pass, %s %s" % (notes.get("tls_version"), notes.get("tls_cipher")),
             hook="starttls" if starttls else None)
    return True
