import os

from setuptools import setup


def bundled(directory):
    """data_files entries for every file under ``directory``: installed as <prefix>/share/qpgevent/<directory>/...

    qpgevent.config.bundled_dir finds them there when there is no checkout around the package.
    """
    entries = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        paths = [os.path.join(root, name) for name in sorted(files) if not name.endswith(".pyc")]
        if paths:
            entries.append((os.path.join("share", "qpgevent", root), paths))
    return entries


setup(
    name="qpgevent",
    version="0.1.0",
    description="The qpsmtpd plugin model, rebuilt in Python on gevent",
    packages=["qpgevent"],
    # The plugins and the working default configuration travel with a non-editable install too.
    data_files=bundled("plugins") + bundled("config"),
    python_requires=">=3.11",
    # prometheus-client: --metrics (imported only when it is given); idna: U-label <-> A-label domains;
    # (the state store's redis:// backend has its own client, qpgevent/resp.py: no package.)
    # pyspf, dkimpy (DKIM and ARC; authres for ARC's Authentication-Results), publicsuffixlist: the
    # sender-authentication plugins and organisational domains; cryptography: their RSA signature check
    # by OpenSSL (qpgevent/dkim_speed.py), and the tests' DKIM keys.
    install_requires=["gevent>=24.2", "dnspython>=2.4", "configobj>=5.0.8", "prometheus-client>=0.17", "idna>=3",
                      "pyspf>=2.0.14", "dkimpy>=1.1", "authres>=1.2", "publicsuffixlist>=1.0", "cryptography>=41"],
    # wheel: tests/test_packaging.py builds one without downloading build tools; geoip2 (the ident/geoip
    # plugin, which names it at start-up when missing) and mmdb-writer (its tests write a database);
    # redis (redis-py): the tests check what our own Redis client stored with the reference client.
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "wheel", "geoip2>=4",
                             "mmdb-writer>=0.2", "redis>=4.2"],
                    "geoip": ["geoip2>=4"]},
    # qpgevent.cli patches the standard library with gevent before importing the rest.
    entry_points={"console_scripts": ["qpsmtpd-server = qpgevent.cli:server_main",
                                      "qpsmtpd = qpgevent.cli:inetd_main",
                                      "qpsmtpd-state = qpgevent.state_tool:main",
                                      "qpsmtpd-dkim-keygen = qpgevent.dkim_keygen:main"]},
)
