"""Errors of the control API, shared by the server (inside the node) and both clients.

``ControlError`` crosses the wire: a handler raises it, the client raises the same class with the
same code and message. The others are local: a client that cannot reach or keep its node, a server
that cannot take the socket.
"""

from __future__ import annotations

from p2pshare.protocol.control_wire import ErrorCode


class ControlError(Exception):
    """A request failed for a reason the node states; ``code`` is an ErrorCode value (or a newer
    code from a newer node), ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


class VersionMismatch(ControlError):
    """The node and this client speak different control-protocol versions."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.VERSION_MISMATCH, message)


class ControlConnectionError(Exception):
    """The client has no usable connection to a node; the message says what happened."""


class NodeNotRunning(ControlConnectionError):
    """Nothing answers on the control socket (no socket file, or nobody listening on it)."""


class ConnectionClosed(ControlConnectionError):
    """The node closed the connection (it stopped, or refused what we sent)."""


class ControlTimeout(ControlConnectionError, TimeoutError):
    """The node did not answer in time; the connection may still be usable."""


class ControlServerError(Exception):
    """The server cannot listen where it was asked to; the message says why and what to do."""


class NodeAlreadyRunning(ControlServerError):
    """A live node already answers on the control socket."""
