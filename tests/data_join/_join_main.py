"""A data-join party as users run it: ``FLDataWorker(config=get_config(yaml).__dict__).do_worker()``.

The yaml path comes from $DATA_JOIN_YAML, overrides from the command line. With
$DATA_JOIN_CAPTURE set, every message this party sends is appended there (serialized as on the
wire) so a test can inspect what crosses.
"""
import logging
import os
import sys

import mindspore_federated  # noqa: F401  (first: selects protobuf's backend)
from mindspore_federated import FLDataWorker
from mindspore_federated.common.config import get_config


def _capture(path):
    from mindspore_federated.communication import codec
    from mindspore_federated.communication.communicator import VerticalFederatedCommunicator

    original = VerticalFederatedCommunicator.send_tensors

    def send_tensors(self, target_name, tensor_dict):
        with open(path, "ab") as handle:
            blob = codec.dumps(tensor_dict)
            handle.write(len(blob).to_bytes(8, "little") + blob)
        return original(self, target_name, tensor_dict)

    VerticalFederatedCommunicator.send_tensors = send_tensors


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if os.environ.get("DATA_JOIN_CAPTURE"):
        _capture(os.environ["DATA_JOIN_CAPTURE"])
    worker = FLDataWorker(config=get_config(os.environ["DATA_JOIN_YAML"]).__dict__)
    worker.do_worker()
    print(f"intersection_size={worker.intersection_size}", flush=True)
    worker.communicator().close()
    sys.exit(0)
