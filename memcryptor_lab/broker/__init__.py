"""The broker: a separate key-holder process (daemon), its protocol, and its client design."""

from .client import (
    BrokerClient,
    BrokerError,
    BrokerRestartedError,
    BrokerUnavailableError,
    KeyExistsError,
    PeerRefusedError,
    WrongScopeError,
    start_broker,
)
from .protocol import ProtocolError

__all__ = [
    "BrokerClient",
    "BrokerError",
    "BrokerRestartedError",
    "BrokerUnavailableError",
    "KeyExistsError",
    "PeerRefusedError",
    "ProtocolError",
    "WrongScopeError",
    "start_broker",
]
