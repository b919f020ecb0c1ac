"""Make a test PKI for the communicator: a CA, server and client certificates per party, a CRL.

Usage::

    python -m mindspore_federated.tools.gen_certs OUT_DIR --names leader,follower \
        --ips 127.0.0.1 --password SECRET [--dns localhost] [--days 365]

Writes into OUT_DIR (never commit these files):

- ``ca.pem`` (CA certificate) and ``ca_key.pem`` (CA key, encrypted with the password),
- per party NAME: ``NAME_server.p12`` / ``NAME_client.p12`` (password-protected PKCS#12) and the
  same as PEM, ``NAME_server.pem`` / ``NAME_client.pem`` (certificate + encrypted private key),
- ``crl.pem``: an empty CRL signed by the CA (``--revoke CERT`` adds certificates to it).

Files holding keys end with mode 0600, even when they existed before with another mode; a
symbolic or hard link planted in OUT_DIR under one of these names is refused, never followed.

Server certificates carry the party name and every ``--ips``/``--dns`` entry in their subjectAltName
(the communicator verifies the server against the address it dials); client certificates carry the
party name as CN and DNS SAN (the server checks it against the ``sender`` of each message).
Keys are ECDSA P-256. The functions are the API the tests use.
"""
from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CaPair = Tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mindspore_federated"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _password_bytes(password) -> Optional[bytes]:
    if password is None or password == "" or password == b"":
        return None
    return password.encode() if isinstance(password, str) else bytes(password)


def _encryption(password):
    pw = _password_bytes(password)
    return serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption()


def generate_ca(common_name: str = "mindspore_federated test CA", days: int = 365) -> CaPair:
    """A self-signed CA (key, certificate) valid from one hour ago for ``days`` days."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now() - dt.timedelta(hours=1)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue_certificate(ca: CaPair, common_name: str, *, server: bool, ips: Iterable[str] = (),
                      dns: Iterable[str] = (), not_before: Optional[dt.datetime] = None,
                      not_after: Optional[dt.datetime] = None,
                      days: int = 365) -> Tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf (key, certificate) signed by ``ca``; ``not_before``/``not_after`` allow expired certs."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - dt.timedelta(hours=1)
    end = not_after or start + dt.timedelta(days=days)
    alt_names = [x509.DNSName(common_name)] + [x509.DNSName(d) for d in dns if d != common_name]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def write_key_and_cert(out_dir, stem: str, key, cert: x509.Certificate, password,
                       ca_cert: Optional[x509.Certificate] = None) -> Dict[str, Path]:
    """Write ``stem.p12`` (password-protected PKCS#12) and ``stem.pem`` (cert + encrypted key)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p12 = pkcs12.serialize_key_and_certificates(stem.encode(), key, cert,
                                                [ca_cert] if ca_cert is not None else None,
                                                _encryption(password))
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encryption(password))
    paths = {"p12": out / f"{stem}.p12", "pem": out / f"{stem}.pem"}
    _write_private(paths["p12"], p12)
    _write_private(paths["pem"], pem)
    return paths


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with exactly ``mode``, never through a link planted there.

    A symlink (or a file hard-linked elsewhere) in the output folder could redirect a private key
    to a place the attacker reads, or make us overwrite another file: refused, naming it. A file
    that already exists gets ``mode`` too (open()'s mode only applies to new files).
    """
    _refuse_symlink(path, "write")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, mode)
    except OSError as err:  # ELOOP: a symlink appeared since the check
        raise FileExistsError(f"refusing to write {path}: {err.strerror}") from err
    with os.fdopen(fd, "wb") as f:
        info = os.fstat(f.fileno())
        if info.st_nlink > 1:
            raise FileExistsError(f"refusing to write {path}: it has {info.st_nlink} hard links; remove it first")
        os.fchmod(f.fileno(), mode)
        f.truncate()
        f.write(data)


def _refuse_symlink(path: Path, action: str) -> None:
    if path.is_symlink():
        raise FileExistsError(f"refusing to {action} {path}: it is a symbolic link (to {os.readlink(path)}); "
                              f"remove it first")


def _write_private(path: Path, data: bytes) -> None:
    _write_file(path, data, 0o600)


def write_ca(out_dir, ca: CaPair, password) -> Dict[str, Path]:
    """Write ``ca.pem`` (certificate) and ``ca_key.pem`` (encrypted key)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key, cert = ca
    paths = {"cert": out / "ca.pem", "key": out / "ca_key.pem"}
    _write_file(paths["cert"], cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write_private(paths["key"], key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   _encryption(password)))
    return paths


def generate_party_certs(out_dir, name: str, ca: CaPair, password, ips: Sequence[str] = ("127.0.0.1",),
                         dns: Sequence[str] = (), days: int = 365,
                         not_before: Optional[dt.datetime] = None,
                         not_after: Optional[dt.datetime] = None) -> Dict[str, Path]:
    """Server and client certificates of party ``name``.

    Returns paths keyed ``server_p12``, ``server_pem``, ``client_p12``, ``client_pem``.
    """
    paths = {}
    for role, server in (("server", True), ("client", False)):
        key, cert = issue_certificate(ca, name, server=server, ips=ips if server else (),
                                      dns=dns if server else (), days=days,
                                      not_before=not_before, not_after=not_after)
        written = write_key_and_cert(out_dir, f"{name}_{role}", key, cert, password, ca[1])
        paths[f"{role}_p12"], paths[f"{role}_pem"] = written["p12"], written["pem"]
    return paths


def generate_crl(ca: CaPair, revoked: Iterable[x509.Certificate] = (),
                 days: int = 30) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` that revokes ``revoked`` (certificates, or serial numbers)."""
    ca_key, ca_cert = ca
    now = _now() - dt.timedelta(minutes=5)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now).next_update(now + dt.timedelta(days=days)))
    serials = []
    for cert in revoked:
        serial = cert if isinstance(cert, int) else cert.serial_number
        if serial not in serials:
            serials.append(serial)
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
    return builder.sign(ca_key, hashes.SHA256())


def write_crl(path, crl: x509.CertificateRevocationList) -> Path:
    path = Path(path)
    _write_file(path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
    return path


def revoked_by(path, ca: CaPair) -> list:
    """Serials already revoked by the CRL at ``path`` (none if it does not exist); the CRL must be
    signed by ``ca``, or it is not ours to extend."""
    path = Path(path)
    _refuse_symlink(path, "use")
    if not path.exists():
        return []
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except ValueError as err:
        raise ValueError(f"{path} is not a PEM CRL: {err}") from err
    if crl.issuer != ca[1].subject or not crl.is_signature_valid(ca[1].public_key()):
        raise ValueError(f"{path} is not a CRL of the CA in {path.parent}; move it away to start a new one")
    return [r.serial_number for r in crl]


def load_ca(out_dir, password) -> CaPair:
    """Read back the CA written by :func:`write_ca`."""
    out = Path(out_dir)
    key = serialization.load_pem_private_key((out / "ca_key.pem").read_bytes(), _password_bytes(password))
    cert = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    return key, cert


def _load_cert_file(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        return x509.load_der_x509_certificate(data)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mindspore_federated.tools.gen_certs",
                                     description="Make a CA, per-party server/client certificates "
                                                 "(.p12 and .pem) and a CRL for the communicator.")
    parser.add_argument("out_dir", help="output directory (created; never commit its files)")
    parser.add_argument("--names", default="leader,follower", help="comma-separated party names")
    parser.add_argument("--ips", default="127.0.0.1", help="comma-separated server IPs (SAN)")
    parser.add_argument("--dns", default="", help="comma-separated server DNS names (SAN)")
    parser.add_argument("--password", default=None,
                        help="password of the .p12/.pem files (default: $MSF_CERT_PASSWORD)")
    parser.add_argument("--days", type=int, default=365, help="validity in days")
    parser.add_argument("--revoke", action="append", default=[], metavar="CERT",
                        help="only add CERT (.pem/.der) to OUT_DIR/crl.pem (certificates it revokes "
                             "already stay revoked), using the existing CA in OUT_DIR; repeatable")
    args = parser.parse_args(argv)
    password = args.password if args.password is not None else os.environ.get("MSF_CERT_PASSWORD")
    if not password:
        parser.error("a password is required (--password or $MSF_CERT_PASSWORD)")
    out = Path(args.out_dir)
    if args.revoke:
        ca = load_ca(out, password)
        try:
            before = revoked_by(out / "crl.pem", ca)
            serials = before + [_load_cert_file(Path(p)).serial_number for p in args.revoke]
            crl = generate_crl(ca, serials)
            path = write_crl(out / "crl.pem", crl)
        except (ValueError, OSError) as err:
            parser.error(str(err))
        print(f"wrote {path}: {len(crl)} certificate(s) revoked ({len(crl) - len(before)} new)")
        return 0
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    names = split(args.names)
    if not names:
        parser.error("--names is empty")
    ca = generate_ca(days=args.days)
    try:
        write_ca(out, ca, password)
        for name in names:
            generate_party_certs(out, name, ca, password, ips=split(args.ips), dns=split(args.dns),
                                 days=args.days)
        write_crl(out / "crl.pem", generate_crl(ca))
    except OSError as err:
        parser.error(str(err))
    print(f"wrote CA, crl.pem and certificates for {', '.join(names)} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
