"""The two-party split-learning protocol, independent of any model.

Two parties train one network cut into sub-networks: the *leader* owns the data and drives each
step; the *follower* reacts. Per training step they exchange five step-tagged messages::

    leader -> follower  FORWARD         activations (or only the step tag)
    follower -> leader  FORWARD_REPLY   the follower's outputs
    leader -> follower  BACKWARD        gradients for the follower's outputs
    follower -> leader  BACKWARD_REPLY  gradients for the leader + the follower's squared norm, overflow
    leader -> follower  DECISION        global norm, overflow, save flag

after a HELLO handshake (role, settings fingerprint, completed steps, wire compression) and until
DONE; either party may send ABORT with the reason it stops. A network cut into more parts chains
this protocol through relay stages (`FLModelRelay`). See docs/protocol.md.
"""
from .channel import CommunicatorChannel, LocalChannel
from .fl_follower import FLModelFollower
from .fl_leader import FLModelLeader
from .fl_relay import FLModelRelay
from .decision import Decision, GlobalNormOptimizer, GradientStats, decide, sendable_gradient
from .messages import Kind, Message, PeerAborted, ProtocolError, make_message
from .session import FollowerHandler, FollowerLoop, PeerSession, describe_settings_mismatch

__all__ = ["Kind", "Message", "ProtocolError", "PeerAborted", "make_message", "LocalChannel",
           "CommunicatorChannel", "PeerSession", "FollowerLoop", "FollowerHandler", "FLModelFollower",
           "FLModelLeader", "FLModelRelay", "GradientStats", "Decision", "decide", "GlobalNormOptimizer",
           "sendable_gradient", "describe_settings_mismatch"]
