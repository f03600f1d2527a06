"""The one catch-all around a client's message, shared by the service and the multi-worker front.

Whatever fails while a message is handled, a bug included, becomes an error reply carrying the
message's req/session/seq (a `ProtocolError` with its own code, anything else `internal` with the
traceback in the log): the process outlives any one message.
"""

from __future__ import annotations

import logging
import time
import traceback

from ..interop import protocol as P


class MessageGuard:
    """Mixed into a ROUTER loop that has `clients` ({identity: state with `name` and
    `last_seen`}), `_new_client(identity, now)`, `_handle(client, parts, context)`, `error(...)`
    and `_log`."""

    clients: dict
    _log: logging.Logger

    def handle(self, identity: bytes, *parts: bytes) -> None:
        """Answer one message (its ZeroMQ parts after the identity)."""
        now = time.monotonic()
        client = self.clients.get(identity)
        if client is None:
            client = self.clients[identity] = self._new_client(identity, now)
        client.last_seen = now
        context: dict = {}
        try:
            self._handle(client, parts, context)
        except P.ProtocolError as exc:
            self.error(identity, exc.code, exc.message, **{**context, **exc.context})
        except Exception:
            self._log.error("message from %s failed:\n%s", client.name or identity.hex(), traceback.format_exc())
            self.error(identity, P.ErrorCode.INTERNAL, "the service failed on this message; see its log", **context)
