"""TLS material and peer checks of the communicator.

gRPC takes keys and certificates as PEM bytes and offers no CRL, cipher-suite or peer-name hooks in
Python, so this module does what gRPC cannot: it opens password-protected PKCS#12/PEM files with
``cryptography``, verifies a CRL against the CA and checks peers against it, binds a client
certificate to the sender name it claims, and maps ``cipher_list`` onto gRPC's process-wide
``GRPC_SSL_CIPHER_SUITES``. Nothing here imports grpc (see :func:`apply_cipher_list`).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

logger = logging.getLogger(__name__)

# TLS 1.2 suites allowed in cipher_list: forward secret (ECDHE) and AEAD only. TLS 1.3 suites are
# not configurable in gRPC (BoringSSL) and are all AEAD (AES-GCM, CHACHA20-POLY1305).
ALLOWED_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
)
DEFAULT_CIPHER_LIST = ":".join(ALLOWED_CIPHERS)
_CIPHER_ENV = "GRPC_SSL_CIPHER_SUITES"

Password = Union[str, bytes, None]


class SSLConfig:
    """Certificates for mutual TLS between parties.

    ``server_cert_path``/``client_cert_path``: the party's server and client certificate with its
    private key, either a PKCS#12 file (``.p12``/``.pfx``) or a PEM file holding the certificate
    (chain) and the (encrypted) private key; ``server_password``/``client_password`` open them.
    ``ca_cert_path``: PEM/DER CA certificate(s) both sides verify peers against.
    The three paths may be left out here and set as attributes later, as in the original; a
    communicator with ``enable_ssl=True`` refuses to start while one is missing.
    ``crl_path``: optional PEM/DER CRL signed by that CA; listed certificates are refused.
    ``cipher_list``: colon-separated TLS 1.2 suites; only :data:`ALLOWED_CIPHERS` (forward
    secret, AEAD) are used, others are dropped with one warning naming them.
    ``cert_expire_warning_time_in_day``: warn when a certificate expires within that many days (7..180).
    """

    def __init__(self, server_password: Password, client_password: Password,
                 server_cert_path: Optional[str] = None, client_cert_path: Optional[str] = None,
                 ca_cert_path: Optional[str] = None, crl_path: Optional[str] = None,
                 cipher_list: str = DEFAULT_CIPHER_LIST, cert_expire_warning_time_in_day: int = 90):
        self.server_password = server_password
        self.client_password = client_password
        self.server_cert_path = _optional_file(server_cert_path, "server_cert_path")
        self.client_cert_path = _optional_file(client_cert_path, "client_cert_path")
        self.ca_cert_path = _optional_file(ca_cert_path, "ca_cert_path")
        self.crl_path = _existing_file(crl_path, "crl_path") if crl_path else None
        self.cipher_list = _validate_cipher_list(cipher_list)
        days = cert_expire_warning_time_in_day
        if isinstance(days, bool) or not isinstance(days, int) or not 7 <= days <= 180:
            raise ValueError(f"cert_expire_warning_time_in_day must be an int in [7, 180], got {days!r}")
        self.cert_expire_warning_time_in_day = days

    def __repr__(self) -> str:  # never show passwords
        return (f"SSLConfig(server_cert_path={self.server_cert_path!r}, client_cert_path="
                f"{self.client_cert_path!r}, ca_cert_path={self.ca_cert_path!r}, crl_path={self.crl_path!r})")


def _existing_file(path, what: str) -> str:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"{what} must be a file path, got {path!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: no such file {str(path)!r}")
    return str(path)


def _optional_file(path, what: str) -> Optional[str]:
    return None if path is None else _existing_file(path, what)


def _validate_cipher_list(cipher_list: str) -> str:
    """The allowed suites of ``cipher_list``, in its order. Others (the original's default has
    PSK and CCM suites) are dropped with one warning; if none is left, the default list is used."""
    if not isinstance(cipher_list, str) or not cipher_list.strip():
        raise ValueError("cipher_list must be a non-empty colon-separated string of cipher suites")
    names = [c.strip() for c in cipher_list.split(":") if c.strip()]
    kept = [c for c in names if c in ALLOWED_CIPHERS]
    dropped = [c for c in names if c not in ALLOWED_CIPHERS]
    if dropped:
        logger.warning("cipher_list: dropped %s (only forward-secret AEAD suites are used: %s)%s",
                       ", ".join(dropped), ", ".join(ALLOWED_CIPHERS),
                       "" if kept else "; none left, using the default list")
    return ":".join(kept) if kept else DEFAULT_CIPHER_LIST


def apply_cipher_list(cipher_list: str) -> bool:
    """Restrict gRPC's TLS 1.2 suites; returns whether ``cipher_list`` is in effect.

    gRPC reads ``GRPC_SSL_CIPHER_SUITES`` once, when the grpc module is imported, and applies it to
    every channel and server of the process; there is no per-channel setting. So this works only
    before ``import grpc`` and the first communicator's list wins. A value already present in the
    environment is the operator's choice and takes precedence.
    """
    current = os.environ.get(_CIPHER_ENV)
    if current == cipher_list:
        return True
    if "grpc" in sys.modules:
        logger.warning("cipher_list not applied: grpc was imported before the communicator was created "
                       "and reads %s only at import (current value: %s); set it in the environment",
                       _CIPHER_ENV, current or "<gRPC default>")
        return False
    if current:
        logger.warning("cipher_list ignored: %s=%s is set in the environment and takes precedence",
                       _CIPHER_ENV, current)
        return False
    os.environ[_CIPHER_ENV] = cipher_list
    logger.info("TLS 1.2 cipher suites for this process (via %s): %s", _CIPHER_ENV, cipher_list)
    return True


# --- loading -------------------------------------------------------------------------------------

def _pw(password: Password) -> Optional[bytes]:
    if password is None or password in ("", b""):
        return None
    return password.encode() if isinstance(password, str) else bytes(password)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key_and_chain(path: str, password: Password, what: str) -> Tuple[bytes, List[x509.Certificate]]:
    """(unencrypted PKCS#8 key PEM, [leaf, intermediates...]) from a PKCS#12 or PEM file.

    The decrypted key only lives in memory, to be handed to gRPC.
    """
    data = Path(path).read_bytes()
    is_p12 = Path(path).suffix.lower() in (".p12", ".pfx") or b"-----BEGIN" not in data
    try:
        if is_p12:
            key, cert, extra = pkcs12.load_key_and_certificates(data, _pw(password))
            if key is None or cert is None:
                raise ValueError("the PKCS#12 file holds no private key or no certificate")
            chain = [cert] + [c for c in extra if c.subject != c.issuer]  # drop self-signed roots
        else:
            chain = x509.load_pem_x509_certificates(data)
            key_data = data if b"PRIVATE KEY-----" in data else Path(path).with_suffix(".key").read_bytes()
            key = serialization.load_pem_private_key(key_data, _pw(password))
    except (ValueError, TypeError, OSError) as err:
        raise ValueError(f"cannot load {what} from {path!r} (wrong password or not a PKCS#12/PEM "
                         f"certificate with its private key): {err}") from err
    if key.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo) != \
            chain[0].public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo):
        raise ValueError(f"{what} {path!r}: the private key does not match the certificate")
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, chain


def _load_certs(path: str, what: str) -> List[x509.Certificate]:
    data = Path(path).read_bytes()
    try:
        return x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data \
            else [x509.load_der_x509_certificate(data)]
    except ValueError as err:
        raise ValueError(f"cannot load {what} from {path!r}: {err}") from err


class RevocationList:
    """The serials a CA revoked, loaded from a CRL whose signature was verified against that CA."""

    def __init__(self, path: str, ca_certs: List[x509.Certificate]):
        data = Path(path).read_bytes()
        try:
            crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        except ValueError as err:
            raise ValueError(f"cannot load CRL {path!r}: {err}") from err
        issuers = [ca for ca in ca_certs if ca.subject == crl.issuer]
        if not any(crl.is_signature_valid(ca.public_key()) for ca in issuers):
            raise ValueError(f"CRL {path!r} is not signed by the configured CA "
                             f"(issuer {crl.issuer.rfc4514_string()})")
        next_update = crl.next_update_utc
        if next_update is not None and next_update < dt.datetime.now(dt.timezone.utc):
            logger.warning("CRL %s is outdated (next update was due %s); using it anyway", path, next_update)
        self.path = path
        self.issuer = crl.issuer
        self.serials = frozenset(r.serial_number for r in crl)

    def is_revoked(self, cert: x509.Certificate) -> bool:
        return cert.issuer == self.issuer and cert.serial_number in self.serials


@dataclass
class TLSMaterial:
    """Everything loaded from an SSLConfig, as gRPC wants it."""
    server_key_pem: bytes
    server_chain_pem: bytes
    client_key_pem: bytes
    client_chain_pem: bytes
    ca_pem: bytes
    client_leaf: x509.Certificate
    ca_certs: List[x509.Certificate]
    crl: Optional[RevocationList] = None
    _checked: dict = field(default_factory=dict)  # (peer cert PEM, sender) -> refusal reason or ""

    def check_client(self, cert_pem: bytes, sender: str) -> str:
        """Why a client certificate may not speak for ``sender`` ("" when it may).

        The handshake already verified it against the CA; this adds revocation and identity: the
        certificate's CN or a DNS subjectAltName must equal the sender name it claims.
        """
        key = (cert_pem, sender)
        reason = self._checked.get(key)
        if reason is None:
            reason = self._check_client(cert_pem, sender)
            if len(self._checked) > 1024:
                self._checked.clear()
            self._checked[key] = reason
        return reason

    def client_identity(self, cert_pem: bytes, peers) -> Tuple[str, str]:
        """(the configured peer this client certificate speaks for, "") or ("", why it speaks for none).

        Checked when a call opens, before anything is read from it: a revoked certificate, or one
        of the CA that names no configured peer, is turned away without waiting for its data.
        """
        for name in sorted(peers):
            if self.check_client(cert_pem, name) == "":
                return name, ""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as err:
            return "", f"unreadable client certificate: {err}"
        if self.crl is not None and self.crl.is_revoked(cert):
            return "", (f"client certificate {cert.subject.rfc4514_string()} (serial "
                        f"{cert.serial_number:x}) is revoked by CRL {self.crl.path}")
        return "", (f"client certificate names {sorted(certificate_names(cert))} include none of the "
                    f"configured peers {sorted(peers)}")

    def _check_client(self, cert_pem: bytes, sender: str) -> str:
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as err:
            return f"unreadable client certificate: {err}"
        if self.crl is not None and self.crl.is_revoked(cert):
            return (f"client certificate {cert.subject.rfc4514_string()} (serial {cert.serial_number:x}) "
                    f"is revoked by CRL {self.crl.path}")
        names = certificate_names(cert)
        if sender not in names:
            return (f"client certificate names {sorted(names)} do not include the claimed sender "
                    f"'{sender}'")
        return ""


def certificate_names(cert: x509.Certificate) -> set:
    """CN and DNS subjectAltNames of ``cert``."""
    names = {a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.update(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        pass
    return {str(n) for n in names}


def load_tls_material(config: SSLConfig) -> TLSMaterial:
    """Open every file of ``config``, warn about certificates close to expiry, load the CRL."""
    for what in ("server_cert_path", "client_cert_path", "ca_cert_path"):
        path = getattr(config, what, None)
        if path is None:
            raise ValueError(f"SSLConfig.{what} is not set; TLS (enable_ssl=True) needs the server "
                             f"certificate, the client certificate and the CA certificate")
        _existing_file(path, f"SSLConfig.{what}")
    server_key, server_chain = load_key_and_chain(config.server_cert_path, config.server_password,
                                                  "server certificate")
    client_key, client_chain = load_key_and_chain(config.client_cert_path, config.client_password,
                                                  "client certificate")
    ca_certs = _load_certs(config.ca_cert_path, "CA certificate")
    days = config.cert_expire_warning_time_in_day
    for what, cert in (("server certificate", server_chain[0]), ("client certificate", client_chain[0]),
                       *(("CA certificate", ca) for ca in ca_certs)):
        _warn_expiry(what, cert, days)
    for what, cert in (("server certificate", server_chain[0]), ("client certificate", client_chain[0])):
        if not any(_issued_by(cert, ca) for ca in ca_certs):
            logger.warning("%s %s is not issued by the configured CA; peers using that CA will refuse it",
                           what, cert.subject.rfc4514_string())
    crl = RevocationList(config.crl_path, ca_certs) if config.crl_path else None
    return TLSMaterial(
        server_key_pem=server_key, server_chain_pem=b"".join(_pem(c) for c in server_chain),
        client_key_pem=client_key, client_chain_pem=b"".join(_pem(c) for c in client_chain),
        ca_pem=b"".join(_pem(c) for c in ca_certs), client_leaf=client_chain[0], ca_certs=ca_certs, crl=crl)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except Exception:  # noqa: BLE001 - InvalidSignature, ValueError, TypeError: all mean "no"
        return False


def _warn_expiry(what: str, cert: x509.Certificate, days: int) -> None:
    left = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    subject = cert.subject.rfc4514_string()
    if left.total_seconds() <= 0:
        logger.error("%s %s expired on %s; peers will refuse it", what, subject, cert.not_valid_after_utc)
    elif left < dt.timedelta(days=days):
        logger.warning("%s %s expires in %d day(s) (on %s)", what, subject, left.days, cert.not_valid_after_utc)


# --- client-side probe ---------------------------------------------------------------------------

class ServerProbe:
    """A side TLS connection to a peer's server, made with our client certificate.

    gRPC Python neither shows a client the server's certificate nor says why a server closed the
    connection during the handshake. The probe does both: it fetches the server certificate (to
    check it against the CRL) and tells "the server refused our certificate" (handshake completes,
    then the server hangs up without speaking HTTP/2) from "the server is not up".
    """

    def __init__(self, material: TLSMaterial):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cadata=material.ca_pem.decode())
        ctx.set_alpn_protocols(["h2"])
        # ssl only loads keys from files: write the key re-encrypted with a one-time password.
        one_time = secrets.token_hex(16)
        key = serialization.load_pem_private_key(material.client_key_pem, None)
        blob = material.client_chain_pem + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(one_time.encode()))
        fd, tmp = tempfile.mkstemp(suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            ctx.load_cert_chain(tmp, password=one_time)
        finally:
            os.unlink(tmp)
        self._ctx = ctx

    def probe(self, host: str, port: int, timeout: float = 3.0) -> Tuple[Optional[x509.Certificate], str, bool]:
        """(server certificate or None, "" or what went wrong, whether that is a TLS refusal).

        A refusal (either side rejected the other's certificate) is never transient; failing to
        connect, or a reset in the middle of the handshake (a server being killed), may be. A
        hang-up right after the handshake is taken for a refusal only when a second probe agrees,
        since a server dying at that moment looks the same once.
        """
        cert, problem, verdict = self._probe_once(host, port, timeout)
        if verdict == "maybe":
            time.sleep(0.25)
            cert, problem, verdict = self._probe_once(host, port, timeout)
        return cert, problem, verdict in ("refused", "maybe")

    def _probe_once(self, host: str, port: int, timeout: float):
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as err:
            return None, f"cannot connect: {err}", "transient"
        try:
            with sock, self._ctx.wrap_socket(sock, server_hostname=host) as tls:
                cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
                try:
                    first = tls.recv(1)  # a gRPC server speaks first (HTTP/2 SETTINGS)
                except socket.timeout:
                    return cert, "", "ok"
                except ssl.SSLError as err:
                    if "alert" in str(err).lower():
                        return cert, f"the server refused our client certificate ({_reason(err)})", "refused"
                    return cert, f"connection failed after the TLS handshake ({_reason(err)})", "maybe"
                except OSError as err:
                    return cert, f"connection reset after the TLS handshake ({err})", "transient"
                if not first:
                    return cert, ("the server closed the connection right after the TLS handshake: "
                                  "it refused our client certificate (missing, expired, revoked, "
                                  "or not issued by its CA)"), "maybe"
                return cert, "", "ok"
        except ssl.SSLCertVerificationError as err:
            return None, f"its server certificate is not trusted: {err.verify_message or err}", "refused"
        except ssl.SSLError as err:
            if "alert" in str(err).lower():
                return None, f"the server refused our client certificate ({_reason(err)})", "refused"
            if "wrong_version_number" in str(err).lower():
                return None, "the peer does not speak TLS (is enable_ssl off on its side?)", "refused"
            return None, f"TLS handshake failed ({_reason(err)})", "transient"
        except OSError as err:
            return None, f"TLS handshake interrupted ({err})", "transient"


def _reason(err: Exception) -> str:
    return str(getattr(err, "reason", None) or err)
