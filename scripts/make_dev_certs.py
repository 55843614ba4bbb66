"""Development TLS certificates for a SuperLink and authentication keys for SuperNodes.

    python scripts/make_dev_certs.py --out certs --host 127.0.0.1 --host localhost --node site_a --node site_b

writes::

    certs/ca.crt, ca.key           a self-signed certificate authority (sites get ca.crt only)
    certs/server.crt, server.key   the SuperLink's certificate, signed by the CA, valid for every --host
    certs/nodes/<name>             a SuperNode's private key (EC P-384, OpenSSH format; stays at the site)
    certs/nodes/<name>.pub         its public key (the coordinator registers it: flwr supernode register)

Flower wants NIST-curve EC keys in OpenSSH format for SuperNode authentication, and a PEM
certificate chain for TLS. For development and tests only: a consortium's production certificates
come from its own CA. Uses ``cryptography`` (a dependency of flwr), so openssl is not needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 365


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate and key."""
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedmosaic development CA"))
        .issuer_name(_name("fedmosaic development CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    _write(out / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    _write(out / "ca.key", _pem_key(key), private=True)
    return cert, key


def make_server_cert(
    out: Path, hosts: list[str], ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> None:
    """The SuperLink's certificate, valid for every host name or IP address in ``hosts``."""
    key = ec.generate_private_key(ec.SECP384R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(out / "server.crt", cert.public_bytes(serialization.Encoding.PEM))
    _write(out / "server.key", _pem_key(key), private=True)


def make_node_key(out: Path, name: str) -> Path:
    """A SuperNode's key pair in OpenSSH format (EC P-384); returns the public key's path."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    _write(out / "nodes" / name, private, private=True)
    _write(out / "nodes" / f"{name}.pub", public + f" {name}\n".encode())
    return out / "nodes" / f"{name}.pub"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("certs"), help="output folder (default: certs)")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or IP address the SuperLink is reached at (repeat; default: 127.0.0.1 and localhost)",
    )
    parser.add_argument(
        "--node", action="append", default=[], help="a SuperNode to make a key pair for (repeat)"
    )
    parser.add_argument("--nodes-only", action="store_true", help="only node keys (a site makes its own)")
    args = parser.parse_args(argv)
    if not args.nodes_only:
        ca, ca_key = make_ca(args.out)
        make_server_cert(args.out, args.host or ["127.0.0.1", "localhost"], ca, ca_key)
        print(f"{args.out}/ca.crt, server.crt, server.key")
    for name in args.node:
        print(make_node_key(args.out, name))


if __name__ == "__main__":
    main()
