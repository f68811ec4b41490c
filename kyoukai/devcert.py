"""
A self-signed development certificate for ``localhost``, ``127.0.0.1`` and ``::1``.

Run ``python -m kyoukai.devcert [--dir DIR]``: it writes ``cert.pem`` and ``key.pem`` and
prints the ``ssl:`` block to paste under the ``kyoukai`` component of a config file. Nothing in
Kyoukai uses this module unless you run it; browsers and clients will not trust the certificate
unless told to (``curl -k``, ``curl --cacert cert.pem``, ``httpx.Client(verify=...)``).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The host names the certificate is valid for.
DNS_NAMES = ("localhost",)
#: The addresses the certificate is valid for.
IP_ADDRESSES = ("127.0.0.1", "::1")
CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"


class DevCertificate(NamedTuple):
    """The paths of a written development certificate and its key."""

    certfile: Path
    keyfile: Path


def generate(days: int = 365) -> tuple[bytes, bytes]:
    """A new self-signed certificate and its private key (EC P-256), both PEM-encoded."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Kyoukai development certificate")])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in IP_ADDRESSES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert_pem, key_pem


def write(directory: str | os.PathLike[str] = ".", *, days: int = 365, overwrite: bool = False) -> DevCertificate:
    """
    Write ``cert.pem`` and ``key.pem`` (readable by the owner only) into ``directory``.

    :raises FileExistsError: if either file exists and ``overwrite`` is false.
    """
    folder = Path(directory).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    paths = DevCertificate(folder / CERT_NAME, folder / KEY_NAME)
    if not overwrite:
        for path in paths:
            if path.exists():
                raise FileExistsError(f"{path} exists; pass --force to replace it")
    cert_pem, key_pem = generate(days)
    paths.certfile.write_bytes(cert_pem)
    fd = os.open(paths.keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    return paths


def ensure(directory: str | os.PathLike[str], *, days: int = 365) -> DevCertificate:
    """
    The development certificate in ``directory``: the one there if it is still valid for a
    day, otherwise a new one (what ``ssl: {dev_certificate: true}`` uses).
    """
    folder = Path(directory).resolve()
    paths = DevCertificate(folder / CERT_NAME, folder / KEY_NAME)
    if paths.certfile.exists() and paths.keyfile.exists():
        cert = x509.load_pem_x509_certificate(paths.certfile.read_bytes())
        if cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1):
            return paths
    return write(folder, days=days, overwrite=True)


def config_block(paths: DevCertificate) -> str:
    """The ``ssl:`` block of a ``kyoukai`` component config for ``paths``."""
    return f"ssl:\n  enabled: true\n  ssl_certfile: {paths.certfile}\n  ssl_keyfile: {paths.keyfile}\n"


def main(argv: list[str] | None = None) -> int:
    """The command line: write the files, print the config block."""
    parser = argparse.ArgumentParser(
        prog="python -m kyoukai.devcert",
        description="Write a self-signed certificate and key for localhost, 127.0.0.1 and ::1 "
        "(for development only) and print the ssl: config block that uses them.",
    )
    parser.add_argument("--dir", default=".", help="where to write cert.pem and key.pem (default: here)")
    parser.add_argument("--days", type=int, default=365, help="days the certificate is valid (default: 365)")
    parser.add_argument("--force", action="store_true", help="replace existing cert.pem and key.pem")
    args = parser.parse_args(argv)
    if args.days <= 0:
        parser.error(f"--days must be positive, not {args.days}")
    try:
        paths = write(args.dir, days=args.days, overwrite=args.force)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Wrote {paths.certfile} and {paths.keyfile} (self-signed, for {', '.join(DNS_NAMES + IP_ADDRESSES)}).")
    print("Put this under your kyoukai component in config.yml (with http2: true to offer HTTP/2):\n")
    print(config_block(paths), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
