"""The refusal every handler and middleware raises, and how long a sender should wait."""

from __future__ import annotations

# Seconds a sender is asked to wait before retrying, by cause.
RETRY_AFTER_OVERLOADED = 1
RETRY_AFTER_UNAVAILABLE = 5


class ApiError(Exception):
    """An answer other than success: the error middleware turns it into JSON."""

    def __init__(
        self, status: int, message: str, *, retry_after: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)
