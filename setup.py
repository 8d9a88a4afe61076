from setuptools import setup

setup(
    name="qpgevent",
    version="0.1.0",
    description="The qpsmtpd plugin model, rebuilt in Python on gevent",
    packages=["qpgevent"],
    python_requires=">=3.11",
    # prometheus-client: --metrics (imported only when it is given).
    install_requires=["gevent>=24.2", "dnspython>=2.4", "configobj>=5.0.8", "prometheus-client>=0.17"],
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6"]},
    # qpgevent.cli patches the standard library with gevent before importing the rest.
    entry_points={"console_scripts": ["qpsmtpd-server = qpgevent.cli:server_main",
                                      "qpsmtpd = qpgevent.cli:inetd_main"]},
)
