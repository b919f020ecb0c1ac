"""Shared set-up of the two-party benchmarks: free loopback ports and a throwaway PKI."""
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_pki(directory, password: str, names=("leader", "follower")) -> None:
    """A CA and server/client certificates for each party (127.0.0.1) under ``directory``."""
    from mindspore_federated.tools import gen_certs
    ca = gen_certs.generate_ca()
    gen_certs.write_ca(directory, ca, password)
    for name in names:
        gen_certs.generate_party_certs(directory, name, ca, password, ips=["127.0.0.1"])


def ssl_config(pki: str, name: str, password: str):
    """SSLConfig of party ``name`` from a PKI made by ``write_pki``."""
    from mindspore_federated import SSLConfig
    return SSLConfig(password, password, f"{pki}/{name}_server.p12", f"{pki}/{name}_client.p12", f"{pki}/ca.pem")
