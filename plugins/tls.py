"""tls: STARTTLS (RFC 3207) and implicit TLS on an smtps listener (RFC 8314).

Arguments (as in qpsmtpd)::

    tls [CERT [KEY [CA]]]

``CERT`` and ``KEY`` are PEM files (default ``ssl/qpsmtpd-server.crt`` and
``ssl/qpsmtpd-server.key`` in the config directory); ``CA`` is an optional
PEM file of CA certificates from which the chain sent with ``CERT`` is
built (intermediates).  Relative paths are taken from the config directory.
``bin/qpsmtpd-tls-cert`` makes a self-signed CA and a server certificate
there.  A file that is missing or does not load stops the start-up.

Config file ``tls.ini`` (all optional)::

    min_version = TLSv1_2        # or TLSv1_3; older protocols are never spoken
    ciphers = ECDHE+AESGCM:...   # OpenSSL cipher string for TLS 1.2 (default: OpenSSL's)
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

from qpgevent import DECLINED, DONE, LOGINFO, LOGNOTICE

SPEC = """
min_version = option('TLSv1_2', 'TLSv1_3', default='TLSv1_2')
ciphers = string(default='')
handshake_timeout = float(min=1, max=600, default=10)
smtps_ports = force_list(default=list("465"))
client_certificates = option('none', 'optional', default='none')
client_ca = string(default='')
"""


def register(self, qp, cert="ssl/qpsmtpd-server.crt", key="ssl/qpsmtpd-server.key", ca=None, *extra):
    if extra:
        raise ValueError("takes at most three arguments: CERT KEY CA")
    settings = self.config_ini("tls", SPEC)
    ini = qp.config.path("tls.ini") or "tls.ini"
    plugin_timeout = qp.plugin_timeout
    if plugin_timeout and settings["handshake_timeout"] >= plugin_timeout:
        raise ValueError("%s: handshake_timeout = %g is not below plugin_timeout (%g s), which would cut the "
                         "handshake short; lower handshake_timeout or raise plugin_timeout"
                         % (ini, settings["handshake_timeout"], plugin_timeout))
    base = str(qp.config.directory)
    paths = [os.path.join(base, p) if p and not os.path.isabs(p) else p for p in (cert, key, ca)]
    for path in filter(None, paths):
        if not os.path.isfile(path):
            raise ValueError("%s does not exist; make a certificate with bin/qpsmtpd-tls-cert or fix the path "
                             "on the tls line" % path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = getattr(ssl.TLSVersion, settings["min_version"])
    if settings["ciphers"]:
        try:
            context.set_ciphers(settings["ciphers"])
        except ssl.SSLError:
            raise ValueError("%s: ciphers = %r selects no cipher; fix the OpenSSL cipher string (see "
                             "'openssl ciphers -v STRING') or remove the line" % (ini, settings["ciphers"])) from None
    try:
        context.load_cert_chain(paths[0], paths[1])
        if paths[2]:
            context.load_verify_locations(paths[2])
    except (ssl.SSLError, OSError) as exc:
        raise ValueError("cannot load certificate %s with key %s%s: %s; check that both are PEM files and that "
                         "the key belongs to the certificate"
                         % (paths[0], paths[1], " and CA file %s" % paths[2] if paths[2] else "", exc)) from None
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
