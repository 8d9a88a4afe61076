"""The protocol core is pure: bytes in, replies out, and no gevent anywhere in its imports."""
import subprocess
import sys

PROTOCOL_CORE = ["smtp", "modes", "outcomes", "data", "chunking", "auth", "sasl", "command", "replies", "trace",
                 "summary", "transaction", "header", "address", "results"]


def test_protocol_core_imports_no_gevent():
    """A fresh interpreter importing every protocol module has not loaded gevent (nor the hook engine's timer)."""
    code = ("import sys\n"
            "for name in %r: __import__('qpgevent.' + name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'greenlet')))\n" % PROTOCOL_CORE)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
