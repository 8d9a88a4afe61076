"""PROXY protocol (HAProxy v1 and v2) on the live server: trusted proxies only."""
import re
import socket
import struct

from qpgevent.testing import parse_replies, read_reply

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src, dst, sport, dport):
    block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


def ehlo_line(sock):
    sock.sendall(b"EHLO client.test\r\n")
    return read_reply(sock).lines[0]


def test_v1_header_from_trusted_proxy_sets_the_client_address(live_server):
    """From an address in proxy_hosts, a v1 header names the real client; plugins see that address."""
    server = live_server(plugins=["relay", "rcpt_ok"], config={"proxy_hosts": "127.0.0.0/8",
                                                                "relayclients": "198.51.100.7"})
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 25\r\n")
        assert read_reply(sock).code == 220
        assert ehlo_line(sock).endswith("[198.51.100.7]")
        sock.sendall(b"MAIL FROM:<a@b.test>\r\n")
        assert read_reply(sock).code == 250
        sock.sendall(b"RCPT TO:<x@elsewhere.test>\r\n")
        assert read_reply(sock).code == 250  # relayclients matched the proxied address


def test_v2_header_and_pipelined_bytes(live_server):
    """A v2 binary header followed at once by the client's first bytes: both are understood."""
    server = live_server(config={"proxy_hosts": "127.0.0.1"})
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(v2_header("203.0.113.9", "192.0.2.1", 5555, 25) + b"EHLO early.test\r\n")
        data = b""
        while len(re.findall(rb"(?m)^\d{3} .*\r\n", data)) < 2:  # both replies complete
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
        greeting, ehlo = parse_replies(data)
        assert greeting.code == 220
        assert ehlo.lines[0].endswith("[203.0.113.9]")


def test_garbage_from_trusted_proxy_is_dropped_without_a_greeting(live_server):
    """A trusted proxy that sends no valid header is disconnected before any SMTP is spoken."""
    server = live_server(config={"proxy_hosts": "127.0.0.1"})
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"EHLO not-a-proxy-header\r\n")
        assert sock.recv(100) == b""


def test_proxy_header_from_anyone_else_is_refused(live_server):
    """Without proxy_hosts a PROXY line is not believed: 554 5.7.1 and the connection is closed."""
    server = live_server()
    with socket.create_connection(server.address, timeout=10) as sock:
        assert read_reply(sock).code == 220
        sock.sendall(b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 25\r\n")
        reply = read_reply(sock)
        assert (reply.code, reply.status) == (554, "5.7.1")
        assert sock.recv(100) == b""


def v2_tls_header(src, dst, sport, dport):
    """A v2 header with a PP2_TYPE_SSL TLV saying the client spoke TLS 1.3 to the proxy."""
    version = b"TLSv1.3"
    ssl_value = bytes([0x01]) + struct.pack("!I", 0) + bytes([0x21]) + struct.pack("!H", len(version)) + version
    tlv = bytes([0x20]) + struct.pack("!H", len(ssl_value)) + ssl_value
    block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport) + tlv
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


def test_v2_tls_information_counts_as_tls(live_server, tmp_path):
    """A proxy that ended TLS says so in the v2 SSL TLV: the session counts as TLS (Received says ESMTPS)."""
    server = live_server(config={"proxy_hosts": "127.0.0.1"})
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(v2_tls_header("203.0.113.9", "192.0.2.1", 5555, 25))
        assert read_reply(sock).code == 220
        assert ehlo_line(sock).endswith("[203.0.113.9]")
        for command in (b"MAIL FROM:<a@b.test>", b"RCPT TO:<u@example.com>", b"DATA"):
            sock.sendall(command + b"\r\n")
            assert read_reply(sock).code in (250, 354)
        sock.sendall(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert read_reply(sock).code == 250
    [delivered] = (tmp_path / "Maildir" / "new").iterdir()
    assert " with ESMTPS;" in delivered.read_text()
