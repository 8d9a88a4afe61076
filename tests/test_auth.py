"""SMTP AUTH (RFC 4954) in the core: offering, the exchanges, the auth hooks, failure pacing, the records.

Real-socket tests run the server with ``auth/auth_flat_file`` as the checker
and ``tls_before_auth 0`` (TLS is the ``tls`` plugin's business); the hook
semantics are tested in memory with mocked auth hooks.
"""
import base64
import hmac
import smtplib
import socket
import subprocess
import time

import pytest

from qpgevent import DECLINED, DENY, DENY_DISCONNECT, DENYSOFT, DONE, OK
from qpgevent.smtp import MAX_AUTH_LINE

USER, PASSWORD = "joe@example.com", "s3cret:pass"
ACCOUNTS = ["%s:%s" % (USER, PASSWORD), "ann@example.org:another"]
FOREIGN = "someone@elsewhere.test"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def plain(user=USER, password=PASSWORD, authzid=""):
    return b64("%s\0%s\0%s" % (authzid, user, password))


def cram_response(challenge_b64, user=USER, password=PASSWORD):
    challenge = base64.b64decode(challenge_b64)
    return b64("%s %s" % (user, hmac.new(password.encode(), challenge, "md5").hexdigest()))


def start_server(live_server, tmp_path, **config):
    """A server with auth_flat_file, rcpt_ok and a maildir; AUTH allowed without TLS, no failure pause."""
    values = {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS, "auth_failure_delay": "0"}
    values.update(config)
    return live_server(plugins=["auth/auth_flat_file", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")],
                       config=values)


def client(server):
    smtp = smtplib.SMTP(*server.address, timeout=10)
    smtp.ehlo("client.test")
    return smtp


def delivered(tmp_path):
    return [path.read_text() for path in (tmp_path / "Maildir" / "new").iterdir()]


# -- offering AUTH ---------------------------------------------------------------------------------------

def test_auth_offered_after_ehlo_and_refused_after_helo(live_server, tmp_path):
    """EHLO advertises ``AUTH PLAIN LOGIN CRAM-MD5``; after HELO the AUTH command gets 503 5.5.1."""
    server = start_server(live_server, tmp_path)
    with client(server) as smtp:
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
    with smtplib.SMTP(*server.address, timeout=10) as smtp:
        smtp.helo("client.test")
        code, text = smtp.docmd("AUTH", "PLAIN " + plain())
        assert (code, text) == (503, b"5.5.1 AUTH not defined for HELO")


def test_auth_needs_tls_by_default(live_server, tmp_path):
    """Without TLS and without ``tls_before_auth 0``, AUTH is not advertised and gets 530 5.7.0."""
    server = start_server(live_server, tmp_path, tls_before_auth="1")
    with client(server) as smtp:
        assert "auth" not in smtp.esmtp_features
        code, text = smtp.docmd("AUTH", "PLAIN " + plain())
        assert code == 530 and text.startswith(b"5.7.0 ")
        assert smtp.docmd("RCPT", "TO:<%s>" % FOREIGN)[0] == 503  # and nothing was authenticated
        smtp.docmd("MAIL", "FROM:<a@sender.test>")
        assert smtp.docmd("RCPT", "TO:<%s>" % FOREIGN)[0] == 550


def test_no_auth_plugin_no_auth(session_factory):
    """With no auth plugin AUTH is an unknown command (500) and EHLO does not advertise it."""
    session = session_factory(config={"tls_before_auth": "0"})
    assert not any(line.startswith("AUTH") for line in session.command("EHLO client.test")[0].lines)
    assert session.command("AUTH PLAIN " + plain())[0].code == 500


def test_mechanisms_follow_the_hooks(session_factory):
    """Only ``auth-plain`` hooked: only PLAIN is offered and LOGIN gets 504 with the name in lower case."""
    session = session_factory(config={"tls_before_auth": "0"})
    session.mock_hook("auth-plain", lambda self, tx, *args: OK)
    assert session.command("EHLO client.test")[0].lines[-1] == "AUTH PLAIN"
    assert str(session.command("AUTH LOGIN")[0]) == "504 5.5.4 Unimplemented authentication mechanism: login"


# -- the three mechanisms, end to end -------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_each_mechanism_authenticates_and_relays(live_server, tmp_path, mechanism):
    """smtplib logs in with each mechanism (235 2.7.0), then relays to a foreign domain; the delivered
    message says ``with ESMTPA`` and carries ``Authentication-Results: mx.test; auth=pass (MECH) smtp.auth=USER``."""
    server = start_server(live_server, tmp_path)
    with client(server) as smtp:
        smtp.user, smtp.password = USER, PASSWORD
        method = {"PLAIN": smtp.auth_plain, "LOGIN": smtp.auth_login, "CRAM-MD5": smtp.auth_cram_md5}[mechanism]
        code, text = smtp.auth(mechanism, method, initial_response_ok=False)
        assert (code, text) == (235, ("2.7.0 %s authentication successful for %s" % (mechanism, USER)).encode())
        assert smtp.sendmail("a@sender.test", [FOREIGN], "Subject: hi\r\n\r\nrelayed\r\n") == {}
    [message] = delivered(tmp_path)
    assert "Authentication-Results: mx.test; auth=pass (%s) smtp.auth=%s\n" % (mechanism, USER) in message
    assert " with ESMTPA; " in message
    assert "Delivered-To: %s" % FOREIGN in message


def test_plain_with_initial_response_and_login_with_username(session_factory, tmp_path):
    """PLAIN takes its credentials in the AUTH line, LOGIN the user name; both go on to 235."""
    config = {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS}
    for line, answers in [("AUTH PLAIN " + plain(), []), ("AUTH LOGIN " + b64(USER), [b64(PASSWORD)]),
                          ("AUTH plain", [plain()])]:
        session = session_factory(["auth/auth_flat_file"], config)
        session.command("EHLO client.test")
        replies = session.command(line)
        for answer in answers:
            assert replies[-1].code == 334
            replies = session.command(answer)
        assert replies[-1].code == 235, line


def test_wrong_password_is_refused_and_relaying_stays_closed(live_server, tmp_path):
    """A wrong password gets 535 5.7.8 naming the mechanism, user and client; the client may still not relay."""
    server = start_server(live_server, tmp_path)
    with client(server) as smtp:
        code, text = smtp.docmd("AUTH", "PLAIN " + plain(password="guess"))
        assert (code, text) == (535, ("5.7.8 PLAIN authentication failed for %s from 127.0.0.1" % USER).encode())
        smtp.docmd("MAIL", "FROM:<a@sender.test>")
        assert smtp.docmd("RCPT", "TO:<%s>" % FOREIGN)[0] == 550
    assert not (tmp_path / "Maildir" / "new").exists() or delivered(tmp_path) == []


def test_swaks_authenticates_with_each_mechanism(live_server, tmp_path):
    """swaks (Perl's Authen::SASL) gets 235 and a queued message with PLAIN, LOGIN and CRAM-MD5."""
    server = start_server(live_server, tmp_path)
    for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
        result = subprocess.run(["swaks", "--server", "%s:%d" % server.address, "--from", "a@sender.test",
                                 "--to", FOREIGN, "--auth", mechanism, "--auth-user", USER,
                                 "--auth-password", PASSWORD, "--timeout", "10"],
                                capture_output=True, text=True, timeout=30)
        assert "<-  235 2.7.0 %s authentication successful" % mechanism in result.stdout, result.stdout
        assert "<-  250 2.0.0 Queued!" in result.stdout, result.stdout
    assert len(delivered(tmp_path)) == 3


# -- protocol errors ----------------------------------------------------------------------------------------

def test_star_cancels_with_501(live_server, tmp_path):
    """``*`` in answer to a challenge cancels with 501 5.7.0 (RFC 4954 4); the session goes on."""
    server = start_server(live_server, tmp_path)
    with client(server) as smtp:
        for mechanism in ("LOGIN", "PLAIN", "CRAM-MD5"):
            assert smtp.docmd("AUTH", mechanism)[0] == 334
            assert smtp.docmd("*") == (501, b"5.7.0 Authentication canceled")
        assert smtp.docmd("AUTH", "LOGIN " + b64(USER))[0] == 334
        assert smtp.docmd("*")[0] == 501
        assert smtp.noop()[0] == 250
        assert smtp.docmd("AUTH", "PLAIN " + plain())[0] == 235


def test_garbage_base64_gets_501_and_the_session_goes_on(live_server, tmp_path):
    """Undecodable answers (bad base64, not UTF-8, bytes above 127) get 501 5.5.2; then AUTH still works."""
    server = start_server(live_server, tmp_path, auth_max_failures="0")
    with client(server) as smtp:
        assert smtp.docmd("AUTH", "PLAIN !!!notbase64") == (501, b"5.5.2 Cannot decode the response (bad base64)")
        assert smtp.docmd("AUTH", "LOGIN")[0] == 334
        assert smtp.docmd("@@@@")[0] == 501
        assert smtp.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0\xff\xfe\0x").decode())[0] == 501
        smtp.send(b"AUTH LOGIN\r\n\xc3\xa9\xff==\r\n")
        assert smtp.getreply()[0] == 334 and smtp.getreply()[0] == 501
        assert smtp.noop()[0] == 250
        assert smtp.docmd("AUTH", "PLAIN " + plain())[0] == 235


def test_auth_twice_gets_503(live_server, tmp_path):
    """After a successful AUTH another AUTH gets 503 5.5.1."""
    server = start_server(live_server, tmp_path)
    with client(server) as smtp:
        smtp.login(USER, PASSWORD)
        assert smtp.docmd("AUTH", "PLAIN " + plain()) == (503, b"5.5.1 but you already said AUTH ...")


def test_auth_inside_a_transaction_gets_503(live_server, tmp_path):
    """AUTH after MAIL is refused with 503 5.5.1 (RFC 4954 4); after RSET it is allowed."""
    server = start_server(live_server, tmp_path)
    with client(server) as smtp:
        assert smtp.docmd("MAIL", "FROM:<a@sender.test>")[0] == 250
        code, text = smtp.docmd("AUTH", "PLAIN " + plain())
        assert code == 503 and text.startswith(b"5.5.1 ")
        smtp.rset()
        assert smtp.docmd("AUTH", "PLAIN " + plain())[0] == 235


def test_unknown_mechanism_gets_504(live_server, tmp_path):
    """An unknown mechanism gets 504 5.5.4; AUTH without one, or with too many words, 501."""
    server = start_server(live_server, tmp_path)
    with client(server) as smtp:
        assert smtp.docmd("AUTH", "GSSAPI") == (504, b"5.5.4 Unimplemented authentication mechanism: gssapi")
        assert smtp.docmd("AUTH")[0] == 501
        assert smtp.docmd("AUTH", "PLAIN a b")[0] == 501
        assert smtp.noop()[0] == 250


def test_sasl_answer_longer_than_the_limit_gets_500(session_factory):
    """An answer line over 12288 octets gets 500 5.5.6 (RFC 4954 4) and ends the exchange."""
    session = session_factory(["auth/auth_flat_file"], {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS,
                                                        "auth_failure_delay": "0"})
    session.command("EHLO client.test")
    assert session.command("AUTH LOGIN")[0].code == 334
    replies = session.send(b"QUFB" * (MAX_AUTH_LINE // 4) + b"\r\nNOOP\r\n")
    assert [str(r) for r in replies] == ["500 5.5.6 Authentication Exchange line is too long", "250 2.0.0 OK"]


def test_cram_md5_answer_without_hex_digest_gets_504(session_factory):
    """A CRAM-MD5 answer whose digest is not 32 hex digits (even 32 non-ASCII letters) gets 504 5.5.4."""
    session = session_factory(["auth/auth_flat_file"], {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS,
                                                        "auth_failure_delay": "0", "auth_max_failures": "0"})
    session.command("EHLO client.test")
    for answer in ("%s %s" % (USER, "é" * 32), USER, "%s %s" % (USER, "z" * 32)):
        assert session.command("AUTH CRAM-MD5")[0].code == 334
        assert str(session.command(b64(answer))[0]) == "504 5.5.4 Invalid authentication string"
    assert session.command("NOOP")[0].code == 250


def test_plain_authzid_must_be_the_user(session_factory):
    """PLAIN with an authorization identity other than the user gets 535 (no acting as someone else)."""
    session = session_factory(["auth/auth_flat_file"], {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS,
                                                        "auth_failure_delay": "0"})
    session.command("EHLO client.test")
    [reply] = session.command("AUTH PLAIN " + plain(authzid="ann@example.org"))
    assert str(reply) == "535 5.7.8 Authentication invalid for %s" % USER
    assert session.command("AUTH PLAIN " + plain(authzid=USER))[0].code == 235


# -- failure pacing ------------------------------------------------------------------------------------------

def timed(smtp, *command):
    began = time.monotonic()
    reply = smtp.docmd(*command)
    return reply, time.monotonic() - began


def test_failures_are_paced_and_limited(live_server, tmp_path):
    """Each failure waits ``auth_failure_delay`` times the number of failures so far; the last one allowed
    (``auth_max_failures 2``) gets its 535, then 421 4.7.0, and the server hangs up."""
    server = start_server(live_server, tmp_path, auth_failure_delay="0.4", auth_max_failures="2")
    with client(server) as smtp:
        (code, _), first = timed(smtp, "AUTH", "PLAIN " + plain(password="a"))
        assert code == 535
        (code, _), second = timed(smtp, "AUTH", "PLAIN " + plain(password="b"))
        assert code == 535
        assert 0.4 <= first < 0.8 <= second  # the pause grows with each failure
        code, text = smtp.getreply()
        assert code == 421 and b"4.7.0 mx.test Too many failed authentication attempts" in text
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()


def test_smtplib_login_with_a_wrong_password_gets_535(live_server, tmp_path):
    """smtplib's login() tries CRAM-MD5, PLAIN and LOGIN in turn with the one wrong password: that is one
    failure (one pause), not three, so it ends in 535 quickly, not in 421 after 6 s as it did."""
    server = start_server(live_server, tmp_path, auth_failure_delay="1")
    with client(server) as smtp:
        began = time.monotonic()
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            smtp.login(USER, "wrong")
        assert failed.value.smtp_code == 535
        assert time.monotonic() - began < 2.0  # one pause of 1 s
        assert smtp.noop()[0] == 250  # still connected
        smtp.login(USER, PASSWORD)  # and the right password still works


def test_repeated_real_failures_still_reach_the_limit(session_factory):
    """New passwords count, and so does the same one again with a mechanism it already failed with:
    ``auth_max_failures 3`` ends the session at the third either way."""
    for passwords in (["a", "b", "c"], ["a", "a", "a"]):
        session = session_factory(["auth/auth_flat_file"], {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS,
                                                            "auth_failure_delay": "0", "auth_max_failures": "3"})
        session.command("EHLO client.test")
        replies = [session.command("AUTH PLAIN " + plain(password=p)) for p in passwords]
        assert [r[0].code for r in replies] == [535, 535, 535]
        assert (replies[-1][-1].code, replies[-1][-1].status) == (421, "4.7.0") and session.closed


def test_same_password_over_cram_md5_then_plain_and_login_is_one_failure(session_factory):
    session = session_factory(["auth/auth_flat_file"], {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS,
                                                        "auth_failure_delay": "0", "auth_max_failures": "2"})
    session.command("EHLO client.test")
    [challenge] = session.command("AUTH CRAM-MD5")
    assert session.command(cram_response(challenge.text, password="wrong"))[0].code == 535
    assert session.command("AUTH PLAIN " + plain(password="wrong"))[0].code == 535
    session.command("AUTH LOGIN " + b64(USER))
    assert [r.code for r in session.command(b64("wrong"))] == [535]
    assert session.session.auth_failures == 1 and not session.closed
    assert [r.code for r in session.command("AUTH PLAIN " + plain(password="other"))] == [535, 421]


def test_success_after_failures_and_cancel_not_counted(session_factory):
    """A cancel is not a failure; two failures then the right password (limit 3) still authenticate."""
    session = session_factory(["auth/auth_flat_file"], {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS,
                                                        "auth_failure_delay": "0", "auth_max_failures": "3"})
    session.command("EHLO client.test")
    for _ in range(5):
        session.command("AUTH LOGIN")
        assert session.command("*")[0].code == 501
    assert session.command("AUTH PLAIN " + plain(password="x"))[0].code == 535
    assert session.command("AUTH PLAIN " + plain(password="y"))[0].code == 535
    assert session.command("AUTH PLAIN " + plain())[0].code == 235
    assert not session.closed


def test_bad_pacing_config_keeps_the_brake(session_factory):
    """A typo in ``auth_failure_delay``/``auth_max_failures`` falls back to 1 second and 3 failures, logged."""
    session = session_factory(["auth/auth_flat_file"], {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS,
                                                        "auth_failure_delay": "fast", "auth_max_failures": "0"})
    logged = session.capture_log()
    session.command("EHLO client.test")
    began = time.monotonic()
    assert session.command("AUTH PLAIN " + plain(password="x"))[0].code == 535
    assert time.monotonic() - began >= 1.0
    assert any("auth_failure_delay" in message for _, _, _, message in logged)


# -- the auth hooks -------------------------------------------------------------------------------------------

@pytest.fixture
def hooked(session_factory):
    """A session whose ``auth`` hook is a mock recording its arguments and answering ``answer[0]``."""
    session = session_factory(config={"tls_before_auth": "0", "auth_failure_delay": "0"})
    session.calls, session.answer = [], [OK]

    def auth(self, transaction, *args):
        session.calls.append(args)
        return session.answer[0]
    session.mock_hook("auth", auth)
    session.command("EHLO client.test")
    return session


def test_hook_arguments_plain_and_login(hooked):
    """PLAIN and LOGIN call the hook with (mechanism, user, clear password, None, None)."""
    hooked.answer[0] = DENY
    assert hooked.command("AUTH PLAIN " + plain())[0].code == 535
    hooked.command("AUTH LOGIN")
    hooked.command(b64("ann@example.org"))
    assert hooked.command(b64("pw"))[0].code == 535
    assert hooked.calls == [("plain", USER, PASSWORD, None, None), ("login", "ann@example.org", "pw", None, None)]


def test_hook_arguments_cram_md5(hooked):
    """CRAM-MD5 calls the hook with (mechanism, user, None, hex HMAC, challenge); the challenge is
    ``<random.time@me>`` and differs between attempts."""
    challenges = []
    for _ in range(2):
        [challenge] = hooked.command("AUTH CRAM-MD5")
        assert challenge.code == 334
        challenges.append(base64.b64decode(challenge.lines[0]).decode())
        hooked.answer[0] = DENY
        hooked.command(cram_response(challenge.lines[0]))
    assert challenges[0] != challenges[1] and challenges[0].startswith("<") and challenges[0].endswith("@mx.test>")
    mechanism, user, password, digest, ticket = hooked.calls[0]
    assert (mechanism, user, password, ticket) == ("cram-md5", USER, None, challenges[0])
    assert digest == hmac.new(PASSWORD.encode(), challenges[0].encode(), "md5").hexdigest()


def test_specific_hook_first_then_generic(hooked):
    """``auth-plain`` is asked first; its OK wins, its DECLINED hands over to the generic ``auth`` hook."""
    specific = []
    hooked.mock_hook("auth-plain", lambda self, tx, *args: specific.append(args) or specific_answer[0], name="specific")
    specific_answer = [DECLINED]
    hooked.answer[0] = DENY
    assert hooked.command("AUTH PLAIN " + plain())[0].code == 535
    assert len(specific) == 1 and len(hooked.calls) == 1
    specific_answer[0] = OK
    assert hooked.command("AUTH PLAIN " + plain())[0].code == 235
    assert len(specific) == 2 and len(hooked.calls) == 1


def test_denysoft_is_a_temporary_failure(hooked):
    """DENYSOFT gets 454 4.7.0 (RFC 4954 6) with the plugin's message, does not count as a failure,
    and grants nothing."""
    hooked.mock_config(auth_max_failures="1")
    hooked.answer[0] = (DENYSOFT, "password database unreachable")
    for _ in range(3):
        [reply] = hooked.command("AUTH PLAIN " + plain())
        assert str(reply) == ("454 4.7.0 Temporary authentication failure, try again later"
                              " - password database unreachable")
    assert not hooked.closed and not hooked.connection.relay_client


def test_failing_plugin_is_a_temporary_failure(hooked):
    """A plugin that raises gets the client 454 4.7.0, never 235."""
    def broken(self, transaction, *args):
        raise RuntimeError("backend exploded")
    hooked.mock_hook("auth-plain", broken, name="broken")
    [reply] = hooked.command("AUTH PLAIN " + plain())
    assert (reply.code, reply.status) == (454, "4.7.0")
    assert hooked.session.auth_user is None


def test_deny_with_message_and_deny_disconnect(hooked):
    """A DENY message follows the 535 text after `` - ``; DENY_DISCONNECT sends the 535 and hangs up."""
    hooked.answer[0] = (DENY, "account locked")
    assert hooked.command("AUTH PLAIN " + plain())[0].text.endswith("from 127.0.0.1 - account locked")
    hooked.answer[0] = DENY_DISCONNECT
    assert hooked.command("AUTH PLAIN " + plain())[0].code == 535
    assert hooked.closed


def test_done_leaves_the_answer_to_the_plugin(hooked):
    """DONE: the plugin's own reply is the only one, and the client is not authenticated."""
    def answer(self, transaction, *args):
        self.qp.respond(535, "5.7.8 go away")
        return DONE
    hooked.mock_hook("auth-plain", answer, name="own")
    assert [str(r) for r in hooked.command("AUTH PLAIN " + plain())] == ["535 5.7.8 go away"]
    assert hooked.session.auth_user is None


def test_control_characters_in_user_are_not_echoed(hooked):
    """A user name with CR, LF or NUL is echoed and recorded without them: no reply or header injection."""
    hooked.answer[0] = OK
    [reply] = hooked.command("AUTH PLAIN " + b64("\0joe\r\n250 fake\x01\0pw"))
    assert str(reply) == "235 2.7.0 PLAIN authentication successful for joe250 fake"
    assert hooked.session.auth_user == "joe250 fake"


def test_authentication_results_after_a_failed_attempt(session_factory, tmp_path):
    """A message from a client whose AUTH failed says ``auth=fail`` and plain ``ESMTP``."""
    session = session_factory(["auth/auth_flat_file", "rcpt_ok", "queue/maildir %s" % (tmp_path / "Maildir")],
                              {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS, "auth_failure_delay": "0",
                               "rcpthosts": ["example.com"]})
    session.command("EHLO client.test")
    session.command("AUTH PLAIN " + plain(password="wrong"))
    assert session.send_message("a@sender.test", ["u@example.com"], "Subject: x\n\nbody\n")[-1].code == 250
    [message] = delivered(tmp_path)
    assert "Authentication-Results: mx.test; auth=fail\n" in message and " with ESMTP; " in message


def test_credentials_never_in_the_log(live_server, tmp_path):
    """At log level 7 (debug, beyond the 6 asked for) the server log holds no password, no base64 of one and
    no PLAIN answer, for successes and failures with every mechanism; it does record the results."""
    server = start_server(live_server, tmp_path, loglevel="7")
    secrets = []
    for password in (PASSWORD, "wrong-pw"):
        secrets += [password, b64(password), plain(password=password)]
        for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
            with client(server) as smtp:
                smtp.user, smtp.password = USER, password
                method = {"PLAIN": smtp.auth_plain, "LOGIN": smtp.auth_login, "CRAM-MD5": smtp.auth_cram_md5}
                try:
                    smtp.auth(mechanism, method[mechanism], initial_response_ok=mechanism == "PLAIN")
                except smtplib.SMTPAuthenticationError:
                    pass
    log = server.log
    assert "235 2.7.0 PLAIN authentication successful for %s" % USER in log
    assert "535 5.7.8 CRAM-MD5 authentication failed for %s" % USER in log
    assert "AUTH <hidden credentials>" in log
    for secret in secrets:
        assert secret not in log


def test_auth_mail_parameter_is_accepted(live_server, tmp_path):
    """``MAIL FROM:<a@b> AUTH=<>`` (and ``AUTH=user``) is accepted before and after AUTH; an empty ``AUTH=`` is 501."""
    server = start_server(live_server, tmp_path)
    with client(server) as smtp:
        assert smtp.docmd("MAIL", "FROM:<a@sender.test> AUTH=<>")[0] == 250
        smtp.rset()
        assert smtp.docmd("MAIL", "FROM:<a@sender.test> AUTH=")[0] == 501
        smtp.login(USER, PASSWORD)
        assert smtp.docmd("MAIL", "FROM:<a@sender.test> AUTH=joe+40example.com")[0] == 250
        assert smtp.docmd("RCPT", "TO:<%s>" % FOREIGN)[0] == 250


def test_original_string_does_not_keep_credentials(hooked):
    """The ``original_string`` note plugins may read keeps ``AUTH PLAIN`` but not the initial response."""
    hooked.command("AUTH PLAIN " + plain())
    assert hooked.connection.notes["original_string"] == "AUTH PLAIN"


def test_auth_before_any_greeting_gets_503(session_factory):
    """AUTH before EHLO is refused with 503 5.5.1 and no challenge; the text asks for EHLO, it does not
    claim the client said HELO (the old text was "AUTH not defined for HELO")."""
    session = session_factory(["auth/auth_flat_file"], {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS})
    [reply] = session.command("AUTH LOGIN")
    assert (reply.code, reply.text) == (503, "5.5.1 please say EHLO first ...")


def test_pipelined_commands_wait_for_the_exchange(live_server, tmp_path):
    """Over a raw socket, the AUTH answer line is read as the answer even when sent in the same write as
    the command, and the commands after it run once the exchange ends."""
    server = start_server(live_server, tmp_path)
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.recv(1000)
        sock.sendall(b"EHLO c.test\r\nAUTH LOGIN\r\n" + b64(USER).encode() + b"\r\n" + b64(PASSWORD).encode()
                     + b"\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<" + FOREIGN.encode() + b">\r\nQUIT\r\n")
        data = b""
        while not data.endswith(b"closing connection. Have a wonderful day.\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    codes = [line[:4] for line in data.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"250 ", b"334 ", b"334 ", b"235 ", b"250 ", b"250 ", b"221 "]


def test_answer_arriving_in_pieces_past_the_limit_ends_the_exchange(session_factory):
    """An AUTH answer that grows past 12288 octets over several reads gets one 500, and the
    next line is read as a command again, not as the rest of the exchange."""
    session = session_factory(["auth/auth_flat_file"], {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS,
                                                        "auth_failure_delay": "0"})
    session.command("EHLO client.test")
    assert session.command("AUTH LOGIN")[0].code == 334
    replies = session.send(b"A" * 8000) + session.send(b"A" * 8000) + session.send(b"\r\nNOOP\r\n")
    assert [r.code for r in replies] == [500, 250]


class _FakeTLSSocket:
    def version(self):
        return "TLSv1.3"

    def cipher(self):
        return ("TLS_AES_128_GCM_SHA256", "TLSv1.3", 128)

    def getpeercert(self):
        return None


def test_starttls_forgets_a_plaintext_authentication(session_factory):
    """RFC 3207 4.2: after STARTTLS the AUTH of the plaintext session (and the relaying it allowed) is gone."""
    session = session_factory(["auth/auth_flat_file"], {"tls_before_auth": "0", "flat_auth_pw": ACCOUNTS,
                                                        "auth_failure_delay": "0"})
    session.transport.start_tls = lambda context, timeout: setattr(session.transport, "socket", _FakeTLSSocket())
    session.command("EHLO client.test")
    assert session.command("AUTH PLAIN " + plain())[0].code == 235
    assert session.connection.relay_client
    session.session.start_tls(context=None, timeout=5)
    assert session.session.auth_user is None and not session.connection.relay_client
    session.command("EHLO client.test")
    session.command("MAIL FROM:<a@b.test>")
    assert session.command("RCPT TO:<%s>" % FOREIGN)[0].code == 450  # no rcpt plugin: not decided, not relayed


def test_authentication_results_quotes_an_odd_user_name(session_factory):
    """A user name that is not a plain token is quoted in Authentication-Results, so ';' cannot add results."""
    session = session_factory(["rcpt_ok"], {"tls_before_auth": "0", "auth_failure_delay": "0"})
    session.mock_hook("auth-plain", lambda self, txn, mech, user, password, digest, ticket: OK)
    queued = []
    session.mock_hook("queue", lambda self, txn: queued.append(txn.header.as_string()) or OK)
    session.command("EHLO client.test")
    assert session.command("AUTH PLAIN " + b64("\0joe; dkim=pass\0x"))[0].code == 235
    assert session.send_message("a@b.test", ["u@example.com"], "Subject: x\n\nbody\n")[-1].code == 250
    assert 'smtp.auth="joe; dkim=pass"' in queued[0]
