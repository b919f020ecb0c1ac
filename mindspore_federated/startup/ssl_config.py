"""``mindspore_federated.startup.ssl_config``: the original's path of SSLConfig.

``default_cipher_list`` is this project's default: forward-secret AEAD suites only (a list with
others, like the original's default, is accepted; those suites are dropped with a warning).
"""
from mindspore_federated.communication.tls import DEFAULT_CIPHER_LIST as default_cipher_list
from mindspore_federated.communication.tls import SSLConfig

__all__ = ["SSLConfig", "default_cipher_list"]
