"""Typed errors of the model core.

Every error the per-frame path can raise is a `StreamStyleError` with a stable string `code` that a
client can act on (the service maps codes onto protocol errors). An error is raised before any state
is changed: a rejected call leaves its session, and every other session, as they were.
"""

from __future__ import annotations


class StreamStyleError(Exception):
    """Base of every error this package raises on purpose."""

    code = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class LayoutError(StreamStyleError, ValueError):
    """A G-buffer layout is missing a channel the model needs, or describes one wrongly."""

    code = "bad_layout"


class ResolutionError(StreamStyleError, ValueError):
    """A frame size the model cannot run (not divisible by the token stride, too small, too large)."""

    code = "bad_resolution"


class InputError(StreamStyleError, ValueError):
    """A frame's buffers have the wrong shape, dtype or device, or hold NaN or infinity."""

    code = "bad_input"


class PromptError(StreamStyleError, ValueError):
    """A prompt or prompt blend that cannot be encoded (empty, too many parts, bad weights)."""

    code = "bad_prompt"


class CacheFullError(StreamStyleError, RuntimeError):
    """The paged temporal cache has no room for a new session and nothing may be evicted."""

    code = "cache_full"


class SessionError(StreamStyleError, KeyError):
    """A session that is unknown, closed, or was evicted from the cache."""

    code = "unknown_session"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class SessionEvictedError(SessionError):
    """The session was evicted to make room for another after being idle too long."""

    code = "session_evicted"


class CheckpointError(StreamStyleError, ValueError):
    """A weights file that is not safetensors, or whose config does not match its tensors."""

    code = "bad_checkpoint"


class ConfigError(StreamStyleError, ValueError):
    """A model or cache configuration that is inconsistent or names an unknown preset."""

    code = "bad_config"
