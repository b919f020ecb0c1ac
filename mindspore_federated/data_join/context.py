"""The settings a data-join worker runs with, and the follower's registration message."""
from __future__ import annotations


class _WorkerRegister:
    """What the follower announces when it registers (its name)."""

    def __init__(self, worker_name: str):
        self.worker_name = worker_name


class _WorkerConfig:
    """The settings of one join; the leader's primary_key, bucket_num, shard_num and join_type win."""

    def __init__(self, output_dir, join_type="psi", bucket_num=1, store_type="csv",
                 primary_key="oaid", thread_num=0, shard_num=1):
        self.output_dir = output_dir
        self.join_type = join_type
        self.bucket_num = bucket_num
        self.store_type = store_type
        self.primary_key = primary_key
        self.thread_num = thread_num
        self.shard_num = shard_num
