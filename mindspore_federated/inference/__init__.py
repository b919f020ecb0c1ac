"""Split inference: a party serves its model part to remote generation sessions (see service.py)."""
from mindspore_federated.inference.service import InferenceClient, InferenceService, Kind, RemoteSession
from mindspore_federated.inference.session import (BadRequest, ServerFull, SessionError, SessionManager,
                                                   UnknownSession)

__all__ = ["InferenceService", "InferenceClient", "RemoteSession", "Kind", "SessionManager", "SessionError",
           "ServerFull", "UnknownSession", "BadRequest"]
