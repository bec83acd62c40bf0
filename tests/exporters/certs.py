"""Test helpers: a system program the tests need (fail, never skip, when missing) and a self-signed
certificate for loopback TLS receivers, made with openssl."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def require(program: str, package: str) -> str:
    """The path of `program`; fails the test (never skips) naming it and its package when missing."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(
            f"{program} is not installed: install {package} (make test does it via scripts/test-deps.sh)"
        )
    return path


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost and its key, made with openssl."""
    openssl = require("openssl", "openssl")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert
