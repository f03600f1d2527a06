"""Typed errors of the model core.

Every error the per-frame path can raise is a `StreamStyleError` with a stable string `code` that a
client can act on (the service maps codes onto protocol errors). The codes are the contract's
(`interop.errors.ErrorCode`, the one list); the errors the contract itself raises (layout,
resolution, input) are defined there and re-exported here. An error is raised before any state is
changed: a rejected call leaves its session, and every other session, as they were.
"""

from __future__ import annotations

from ..interop.errors import (DeviceError, ErrorCode, InputError, LayoutError, ResolutionError,  # noqa: F401
                              StreamStyleError)


class PromptError(StreamStyleError, ValueError):
    """A prompt or prompt blend that cannot be encoded (empty, too many parts, bad weights)."""

    code = ErrorCode.BAD_PROMPT


class CacheFullError(StreamStyleError, RuntimeError):
    """The paged temporal cache has no room for a new session and nothing may be evicted."""

    code = ErrorCode.CACHE_FULL


class SessionError(StreamStyleError, KeyError):
    """A session that is unknown, closed, or was evicted from the cache."""

    code = ErrorCode.UNKNOWN_SESSION

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class SessionEvictedError(SessionError):
    """The session was evicted to make room for another after being idle too long."""

    code = ErrorCode.SESSION_EVICTED


class CheckpointError(StreamStyleError, ValueError):
    """A weights file that is not safetensors, or whose config does not match its tensors."""

    code = ErrorCode.BAD_CHECKPOINT


class ConfigError(StreamStyleError, ValueError):
    """A model or cache configuration that is inconsistent or names an unknown preset."""

    code = ErrorCode.BAD_CONFIG
