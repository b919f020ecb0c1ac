"""FLDataWorker: find the samples both parties hold (PSI) and export them in a shared order."""
from __future__ import annotations

import logging
import os
import time
from typing import Dict, Optional

from mindspore_federated.data_join import _handshake
from mindspore_federated.data_join._channel import DataJoinPeerError, PeerChannel
from mindspore_federated.data_join._psi import EmptyIntersectionError, expected_messages, intersect, split_into_buckets
from mindspore_federated.data_join._schema import SchemaError, load_schema, mindrecord_schema
from mindspore_federated.data_join.context import _WorkerConfig, _WorkerRegister
from mindspore_federated.data_join.io import StagedOutput, check_output_dir, export_mindrecord
from mindspore_federated.data_join.store import STORE_TYPES, load_table

logger = logging.getLogger(__name__)

JOIN_TYPES = ("psi",)
ROLES = ("leader", "follower")

# The original's defaults (tests/st/data_join/vfl/vfl_data_join_config.yaml), plus our own options.
DEFAULTS: Dict[str, object] = {
    "role": "leader", "bucket_num": 5, "store_type": "csv", "data_schema_path": "vfl/leader_schema.yaml",
    "primary_key": "oaid", "main_table_files": "vfl/input/leader/",
    "mysql_host": "127.0.0.1", "mysql_port": 3306, "mysql_database": "", "mysql_charset": "",
    "mysql_user": "test", "mysql_password": "1234", "mysql_table_name": "test_data",
    "server_name": "leader_node", "http_server_address": "127.0.0.1:1086",
    "remote_server_name": "follower_node", "remote_server_address": "127.0.0.1:1087",
    "enable_ssl": False, "server_password": "123456", "client_password": "123456",
    "server_cert_path": "server.p12", "client_cert_path": "client.p12", "ca_cert_path": "cacert.pem",
    "crl_path": "", "cipher_list": None, "cert_expire_warning_time_in_day": 90,
    "join_type": "psi", "thread_num": 0, "output_dir": "vfl/output/leader/", "shard_num": 1,
    # ours: seconds of silence after which the peer counts as gone; seconds to wait for it at start
    "peer_timeout": 60.0, "start_timeout": _handshake.DEFAULT_START_TIMEOUT,
}


def _as_bool(value, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{key} must be True or False, got {value!r}")


def _check_int(value, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be an int in [{low}, {high}], got {value!r}")
    return value


def _check_shared_settings(config: _WorkerConfig, source: str) -> None:
    """The settings the leader decides (checked at the follower too: they come over the wire)."""
    if config.join_type not in JOIN_TYPES:
        raise ValueError(f"join_type ({source}): {config.join_type!r} is not supported (expected one of {JOIN_TYPES})")
    _check_int(config.bucket_num, f"bucket_num ({source})", 1, 1_000_000)
    _check_int(config.shard_num, f"shard_num ({source})", 1, 1000)
    if not isinstance(config.primary_key, str) or not config.primary_key:
        raise ValueError(f"primary_key ({source}) must be a non-empty column name, got {config.primary_key!r}")
    if config.shard_num * config.bucket_num > 4096:
        logger.warning("shard_num * bucket_num = %d: MindData reads at most 4096 files at once",
                       config.shard_num * config.bucket_num)


class FLDataWorker:
    """One party of a data join: reads its table, intersects its ids with the peer's by ECDH-PSI,
    and writes its rows of the shared ids to MindRecord files under ``output_dir``.

    ``config`` holds the original MindSpore Federated keys (see ``DEFAULTS`` and docs/data_join.md);
    ``get_config(yaml_path).__dict__`` gives such a dict. The leader's ``primary_key``,
    ``bucket_num``, ``shard_num`` and ``join_type`` are used by both parties. Read the result with
    :func:`mindspore_federated.data_join.load_mindrecord`. ``communicator``: an already launched
    ``VerticalFederatedCommunicator`` to use (default: one made from the config, shared by the
    workers of this process as in the original).
    """

    _communicator = None

    def __init__(self, config: dict, communicator=None):
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict (e.g. get_config(path).__dict__), got {type(config).__name__}")
        self._config = dict(DEFAULTS)
        self._config.update({key: value for key, value in config.items()})
        role = self._config["role"]
        if role not in ROLES:
            raise ValueError(f"role must be 'leader' or 'follower', got {role!r}")
        if self._config["store_type"] not in STORE_TYPES:
            raise ValueError(f"store_type: {self._config['store_type']!r} is not supported "
                             f"(expected one of {', '.join(STORE_TYPES)})")
        self._worker_config: Optional[_WorkerConfig] = None
        self._comm = communicator
        self.intersection_size: Optional[int] = None

    # --- communicator ----------------------------------------------------------------------------
    def communicator(self):
        """The communicator of the join; training may go on over it."""
        return self._comm if self._comm is not None else FLDataWorker._communicator

    def _create_communicator(self) -> None:
        if self._comm is None:
            self._comm = FLDataWorker._communicator
        if self._comm is not None:
            return
        from mindspore_federated.communication.communicator import ServerConfig, VerticalFederatedCommunicator
        from mindspore_federated.communication.tls import SSLConfig

        cfg = self._config
        ssl_config = None
        enable_ssl = _as_bool(cfg["enable_ssl"], "enable_ssl")
        if enable_ssl:
            extra = {"cipher_list": cfg["cipher_list"]} if cfg.get("cipher_list") else {}
            ssl_config = SSLConfig(cfg["server_password"], cfg["client_password"], cfg["server_cert_path"],
                                   cfg["client_cert_path"], cfg["ca_cert_path"], cfg.get("crl_path") or None,
                                   cert_expire_warning_time_in_day=int(cfg["cert_expire_warning_time_in_day"]),
                                   **extra)
        communicator = VerticalFederatedCommunicator(
            ServerConfig(cfg["server_name"], cfg["http_server_address"]),
            ServerConfig(cfg["remote_server_name"], cfg["remote_server_address"]),
            enable_ssl=enable_ssl, ssl_config=ssl_config,
            # a party busy writing MindRecord files (or training) may be silent longer than the default
            liveness_timeout=float(cfg["peer_timeout"]))
        communicator.launch()
        FLDataWorker._communicator = self._comm = communicator

    # --- the join --------------------------------------------------------------------------------
    def _negotiate(self, key_type: Optional[str]) -> None:
        cfg = self._config
        self._worker_config = _WorkerConfig(output_dir=cfg["output_dir"], join_type=cfg["join_type"],
                                            bucket_num=cfg["bucket_num"], store_type=cfg["store_type"],
                                            primary_key=cfg["primary_key"], thread_num=cfg["thread_num"],
                                            shard_num=cfg["shard_num"])
        communicator, timeout = self._comm, float(cfg["start_timeout"])
        if cfg["role"] == "leader":
            _check_shared_settings(self._worker_config, "leader")
            _handshake.set_worker_config(self._worker_config, key_type)
            _handshake.data_join_wait_for_start(communicator, timeout=timeout)
            self._peer_key_type = None
            return
        reply = _handshake.send_register(communicator, cfg["remote_server_name"], _WorkerRegister(cfg["role"]),
                                         timeout=timeout)
        worker = self._worker_config
        worker.primary_key, worker.bucket_num, worker.shard_num, worker.join_type = reply
        _check_shared_settings(worker, "set by the leader")
        self._peer_key_type = reply.key_type

    def _check_schemas(self, schema) -> None:
        key = self._worker_config.primary_key
        mine = schema.get(key)
        if self._config["role"] == "follower" and mine is not None and self._peer_key_type is not None \
                and mine != self._peer_key_type:
            disagreement = f"primary key {key!r} is {self._peer_key_type} in the leader's schema but {mine} in the follower's"
            error = SchemaError(f"the schemas disagree: {disagreement} ({self._config['data_schema_path']})")
            error.peer_reason = f"the schemas disagree: {disagreement}"
            raise error

    def do_worker(self) -> None:
        """Run the whole join; on success ``output_dir`` holds this party's joined rows."""
        cfg = self._config
        started = time.monotonic()
        schema = load_schema(cfg["data_schema_path"])
        output_dir = check_output_dir(cfg["output_dir"])
        self._create_communicator()
        key_type = schema.get(cfg["primary_key"]) if cfg["role"] == "leader" else None
        self._negotiate(key_type)
        worker = self._worker_config
        peer = cfg["remote_server_name"]
        channel = PeerChannel(self._comm, peer,
                              expected_messages(worker.bucket_num) + [("exported", None)],
                              peer_timeout=float(cfg["peer_timeout"])).start()
        staged = None
        try:
            self._check_schemas(schema)
            table = load_table(worker.store_type, cfg, schema, worker.primary_key)
            logger.info("data join: %d rows from %s; %d buckets", len(table), table.source, worker.bucket_num)
            thread_num = _check_int(cfg["thread_num"], "thread_num", 0, 1024) or min(8, os.cpu_count() or 1)
            buckets = split_into_buckets(table.ids(), worker.bucket_num)
            joined = intersect(channel, buckets, thread_num, peer)
            self.intersection_size = sum(map(len, joined))
            if not self.intersection_size:
                raise EmptyIntersectionError(
                    f"empty intersection: none of this party's {len(table)} ids is held by peer '{peer}' "
                    f"(check that both use the same primary key column and id format)")
            staged = StagedOutput(output_dir)
            files = export_mindrecord(staged.path, table, joined, mindrecord_schema(schema), worker.shard_num)
            channel.send("exported")
            channel.get("exported")  # publish only when the peer's output is complete too
            staged.publish()
            staged = None
            channel.finish()
        except BaseException as err:
            if staged is not None:
                staged.discard()
            if isinstance(err, (DataJoinPeerError, EmptyIntersectionError)):  # the peer knows already
                channel.stop()
            else:
                channel.abort(_public_reason(err))
            raise
        logger.info("data join done in %.1f s: %d ids in common, %d MindRecord files in %s",
                    time.monotonic() - started, self.intersection_size, files, output_dir)


def _public_reason(err: BaseException) -> str:
    """What the peer is told: the kind of failure, never our data (messages may quote ids)."""
    names = {"DuplicateIdError": "its data has duplicate ids", "MissingColumnError": "a column is missing from its data",
             "SchemaError": "its schema or data is invalid", "KeyboardInterrupt": "it was interrupted"}
    reason = getattr(err, "peer_reason", None) or names.get(type(err).__name__, f"it failed ({type(err).__name__})")
    return f"{reason}; see its log"
