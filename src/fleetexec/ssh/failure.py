"""Host-level failures inside the SSH layer, turned into `HostResult`s before they leave it."""

from __future__ import annotations

from ..results import HostResult, Status

__all__ = ["Failure", "StaleConnection"]


class Failure(Exception):
    """A host-level failure, turned into a `HostResult` before leaving this module."""

    def __init__(self, status: Status, message: str, *, retryable: bool = False,
                 bastion: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retryable = retryable  # nothing was sent yet: connecting again is safe
        self.bastion = bastion  # the message names the jump host that failed


class StaleConnection(Failure):
    """The connection was dead before the command started: safe to retry on a new one."""

    def __init__(self) -> None:
        super().__init__(Status.CONNECTION_LOST, "connection lost before the command started")
        self.result: HostResult | None = None
