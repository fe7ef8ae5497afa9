"""The Kafka broker agentstream talks to: the embedded one and the client profile for it."""

from .embedded import EmbeddedBroker, BrokerStartError, tansu_binary
from .profile import BrokerProfile, EMBEDDED_CLUSTER_PREFIX, detect_profile

__all__ = [
    "BrokerProfile",
    "BrokerStartError",
    "EMBEDDED_CLUSTER_PREFIX",
    "EmbeddedBroker",
    "detect_profile",
    "tansu_binary",
]
