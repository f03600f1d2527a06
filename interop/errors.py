"""Errors of the frame transport."""


class RingError(Exception):
    """A ring that cannot be created or opened, or a region that does not fit its allocation."""

    code = "bad_ring"
