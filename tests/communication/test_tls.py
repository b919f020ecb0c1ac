"""SSLConfig, certificate loading, CRL, expiry warnings, cipher_list, and the gen_certs tool."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from mindspore_federated import SSLConfig
from mindspore_federated.communication.tls import (ALLOWED_CIPHERS, DEFAULT_CIPHER_LIST, RevocationList,
                                                   load_key_and_chain, load_tls_material)
from tests.communication.conftest import PASSWORD, free_port, ssl_kwargs

ROOT = Path(__file__).resolve().parents[2]


def test_loads_p12_and_pem_with_passwords(pki):
    for name in ("follower_server.p12", "follower_server.pem", "follower_client.p12", "follower_client.pem"):
        key, chain = load_key_and_chain(str(Path(pki.dir) / name), PASSWORD, "cert")
        assert key.startswith(b"-----BEGIN PRIVATE KEY-----") and len(chain) == 1
        assert chain[0].subject.rfc4514_string().startswith("CN=follower")
    material = load_tls_material(SSLConfig(**ssl_kwargs(pki, "leader")))
    assert material.ca_pem.startswith(b"-----BEGIN CERTIFICATE") and material.crl is not None


@pytest.mark.parametrize("name", ["follower_server.p12", "follower_client.pem"])
def test_wrong_password_is_a_clear_error(pki, name):
    with pytest.raises(ValueError, match=f"cannot load cert from .*{name}.*wrong password"):
        load_key_and_chain(str(Path(pki.dir) / name), "nope", "cert")


def test_key_must_match_certificate(pki, tmp_path):
    a = (Path(pki.dir) / "leader_client.pem").read_bytes()
    b = (Path(pki.dir) / "follower_client.pem").read_bytes()
    cut = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
    mixed = tmp_path / "mixed.pem"
    mixed.write_bytes(a[:a.index(cut)] + b[b.index(cut):])
    with pytest.raises(ValueError, match="does not match"):
        load_key_and_chain(str(mixed), PASSWORD, "client certificate")


def test_crl_must_be_signed_by_the_ca(pki):
    ca = x509.load_pem_x509_certificates((Path(pki.dir) / "ca.pem").read_bytes())
    assert RevocationList(str(Path(pki.dir) / "crl.pem"), ca).serials
    with pytest.raises(ValueError, match="not signed by the configured CA"):
        RevocationList(str(Path(pki.dir) / "rogue_crl.pem"), ca)


def test_revocation_and_identity_checks(pki):
    material = load_tls_material(SSLConfig(**ssl_kwargs(pki, "leader")))
    pem = lambda n: x509.load_pem_x509_certificate((Path(pki.dir) / n).read_bytes()).public_bytes(  # noqa: E731
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM)
    assert material.check_client(pem("follower_client.pem"), "follower") == ""
    assert "revoked" in material.check_client(pem("follower_revoked_client.pem"), "follower")
    assert "claimed sender 'follower'" in material.check_client(pem("mallory_client.pem"), "follower")


def test_expiry_warning(pki, caplog):
    caplog.set_level(logging.WARNING)
    load_tls_material(SSLConfig(**ssl_kwargs(pki, "leader", server="leader_soon_server.p12"),
                                cert_expire_warning_time_in_day=30))
    assert "server certificate CN=leader" in caplog.text and "expires in" in caplog.text
    caplog.clear()
    load_tls_material(SSLConfig(**ssl_kwargs(pki, "leader", server="leader_soon_server.p12"),
                                cert_expire_warning_time_in_day=7))
    assert "expires in" not in caplog.text
    load_tls_material(SSLConfig(**ssl_kwargs(pki, "follower", client="follower_expired_client.pem")))
    assert "expired on" in caplog.text


def test_ssl_config_validation(pki):
    kwargs = ssl_kwargs(pki, "leader")
    for days in (6, 181, 30.5, True):
        with pytest.raises(ValueError, match="cert_expire_warning_time_in_day"):
            SSLConfig(**kwargs, cert_expire_warning_time_in_day=days)
    kept = SSLConfig(**kwargs, cipher_list="ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA").cipher_list
    assert kept == "ECDHE-RSA-AES128-GCM-SHA256"      # weak suites are dropped, not refused
    with pytest.raises(FileNotFoundError, match="ca_cert_path"):
        SSLConfig(**{**kwargs, "ca_cert_path": str(Path(pki.dir) / "missing.pem")})
    assert PASSWORD not in repr(SSLConfig(**kwargs))


_CIPHER_PROBE = textwrap.dedent("""
    import socket, ssl, sys
    from mindspore_federated import SSLConfig, ServerConfig, VerticalFederatedCommunicator
    pki, port, peer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cfg = SSLConfig("{pw}", "{pw}", f"{{pki}}/leader_server.p12", f"{{pki}}/leader_client.p12", f"{{pki}}/ca.pem",
                    cipher_list="ECDHE-ECDSA-AES256-GCM-SHA384")
    with VerticalFederatedCommunicator(ServerConfig("leader", f"127.0.0.1:{{port}}"),
                                       ServerConfig("follower", f"127.0.0.1:{{peer}}"), True, cfg):
        for suite in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(f"{{pki}}/ca.pem")
            ctx.load_cert_chain(f"{{pki}}/follower_client.pem", password="{pw}")
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(suite)
            try:
                with socket.create_connection(("127.0.0.1", port), 5) as s, ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
                    print(suite, "accepted", t.version())
            except (ssl.SSLError, OSError) as e:
                print(suite, "refused")
""")


@pytest.mark.timeout(60)
def test_cipher_list_restricts_tls12_suites(pki):
    script = _CIPHER_PROBE.format(pw=PASSWORD)
    env = {k: v for k, v in os.environ.items() if k != "GRPC_SSL_CIPHER_SUITES"}
    out = subprocess.run([sys.executable, "-c", script, pki.dir, str(free_port()), str(free_port())],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=50)
    assert "ECDHE-ECDSA-AES128-GCM-SHA256 refused" in out.stdout, out.stdout + out.stderr
    assert "ECDHE-ECDSA-AES256-GCM-SHA384 accepted TLSv1.2" in out.stdout, out.stdout + out.stderr


@pytest.mark.timeout(60)
def test_gen_certs_command(tmp_path):
    out = tmp_path / "certs"
    cmd = [sys.executable, "-m", "mindspore_federated.tools.gen_certs", str(out), "--names", "alice,bob",
           "--ips", "127.0.0.1,10.0.0.2", "--dns", "bob.example", "--password", "pw"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=50)
    names = sorted(p.name for p in out.iterdir())
    expected = ["ca.pem", "ca_key.pem", "crl.pem"] + [f"{n}_{r}.{e}" for n in ("alice", "bob")
                                                      for r in ("server", "client") for e in ("p12", "pem")]
    assert names == sorted(expected)
    key, cert, _ = pkcs12.load_key_and_certificates((out / "bob_server.p12").read_bytes(), b"pw")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"bob", "bob.example"} <= set(san.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "10.0.0.2"}
    assert oct((out / "bob_client.pem").stat().st_mode & 0o777) == "0o600"
    subprocess.run(cmd[:4] + ["--password", "pw", "--revoke", str(out / "bob_client.pem")], cwd=ROOT, check=True,
                   capture_output=True, timeout=50)
    crl = x509.load_pem_x509_crl((out / "crl.pem").read_bytes())
    bob = x509.load_pem_x509_certificates((out / "bob_client.pem").read_bytes())[0]
    assert crl.get_revoked_certificate_by_serial_number(bob.serial_number) is not None


# the original's own default cipher_list (mindspore_federated.startup.ssl_config, upstream)
_ORIGINAL_DEFAULT = ("ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
                     "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-PSK-CHACHA20-POLY1305:"
                     "ECDHE-ECDSA-AES128-CCM:ECDHE-ECDSA-AES256-CCM:ECDHE-ECDSA-CHACHA20-POLY1305")


def test_original_cipher_list_is_accepted_with_one_warning(pki, caplog):
    with caplog.at_level(logging.WARNING, logger="mindspore_federated.communication.tls"):
        config = SSLConfig(**ssl_kwargs(pki, "leader"), cipher_list=_ORIGINAL_DEFAULT)
    warnings = [r.getMessage() for r in caplog.records if "cipher_list" in r.getMessage()]
    assert len(warnings) == 1, warnings
    for suite in ("ECDHE-PSK-CHACHA20-POLY1305", "ECDHE-ECDSA-AES128-CCM", "ECDHE-ECDSA-AES256-CCM"):
        assert suite in warnings[0] and suite not in config.cipher_list
    assert config.cipher_list.split(":") == [c for c in _ORIGINAL_DEFAULT.split(":") if c in ALLOWED_CIPHERS]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mindspore_federated.communication.tls"):
        assert SSLConfig(**ssl_kwargs(pki, "leader"), cipher_list="AES128-SHA").cipher_list == DEFAULT_CIPHER_LIST
    assert "none left, using the default list" in caplog.text


def test_certificate_paths_may_come_later(pki):
    """As in the original, SSLConfig(server_password, client_password) alone is valid; TLS refuses
    to start until the paths are set, naming the missing one."""
    kwargs = ssl_kwargs(pki, "leader")
    config = SSLConfig(kwargs["server_password"], kwargs["client_password"])
    with pytest.raises(ValueError, match="SSLConfig.server_cert_path is not set"):
        load_tls_material(config)
    config.server_cert_path = kwargs["server_cert_path"]
    config.client_cert_path = kwargs["client_cert_path"]
    with pytest.raises(ValueError, match="SSLConfig.ca_cert_path is not set"):
        load_tls_material(config)
    config.ca_cert_path = kwargs["ca_cert_path"]
    assert load_tls_material(config).client_leaf is not None


def _gen_certs(*args, check=True):
    return subprocess.run([sys.executable, "-m", "mindspore_federated.tools.gen_certs", *map(str, args),
                           "--password", "pw"], cwd=ROOT, capture_output=True, text=True, timeout=50, check=check)


@pytest.mark.timeout(120)
def test_gen_certs_revoke_adds_to_the_crl(tmp_path):
    """Before: each --revoke wrote a CRL of only the certificates given, undoing earlier revocations."""
    out = tmp_path / "certs"
    _gen_certs(out, "--names", "alice,bob")
    serial = lambda name: x509.load_pem_x509_certificates((out / name).read_bytes())[0].serial_number  # noqa: E731
    _gen_certs(out, "--revoke", out / "alice_client.pem")
    _gen_certs(out, "--revoke", out / "bob_client.pem", "--revoke", out / "bob_server.pem")
    _gen_certs(out, "--revoke", out / "bob_client.pem")  # again: listed once
    crl = x509.load_pem_x509_crl((out / "crl.pem").read_bytes())
    assert sorted(r.serial_number for r in crl) == sorted(
        serial(n) for n in ("alice_client.pem", "bob_client.pem", "bob_server.pem"))
    assert RevocationList(str(out / "crl.pem"), [x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())])


@pytest.mark.timeout(120)
def test_gen_certs_files_with_keys_end_0600_even_if_they_existed(tmp_path):
    """Before: a pre-existing 0644/0666 file kept its mode when rewritten with a private key."""
    out = tmp_path / "certs"
    out.mkdir()
    keyed = ["ca_key.pem", "alice_server.p12", "alice_server.pem", "alice_client.p12", "alice_client.pem"]
    for i, name in enumerate(keyed + ["ca.pem", "crl.pem"]):
        (out / name).write_bytes(b"old")
        os.chmod(out / name, 0o666 if i % 2 else 0o644)
    _gen_certs(out, "--names", "alice")
    modes = {name: oct((out / name).stat().st_mode & 0o777) for name in keyed + ["ca.pem", "crl.pem"]}
    assert modes == {**{n: "0o600" for n in keyed}, "ca.pem": "0o644", "crl.pem": "0o644"}, modes


@pytest.mark.timeout(120)
@pytest.mark.parametrize("planted", ["alice_client.pem", "ca_key.pem", "crl.pem"])
def test_gen_certs_refuses_a_symlink_planted_in_the_output_folder(tmp_path, planted):
    """Before: the key was written through the link, wherever it pointed."""
    out, victim = tmp_path / "certs", tmp_path / "victim"
    out.mkdir()
    victim.write_bytes(b"precious")
    (out / planted).symlink_to(victim)
    result = _gen_certs(out, "--names", "alice", check=False)
    assert result.returncode != 0
    assert f"refusing to write {out / planted}: it is a symbolic link" in result.stderr, result.stderr
    assert victim.read_bytes() == b"precious"
    if planted == "crl.pem":  # the same holds for --revoke
        (out / planted).unlink()
        _gen_certs(out, "--names", "alice")
        (out / planted).unlink()
        (out / planted).symlink_to(victim)
        result = _gen_certs(out, "--revoke", out / "alice_client.pem", check=False)
        assert f"{out / planted}: it is a symbolic link" in result.stderr, result.stderr
        assert victim.read_bytes() == b"precious"
