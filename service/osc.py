"""OSC control (python-osc's packet parser) on an opt-in loopback UDP port.

Addresses (docs/operators.md, "OSC"), `<session>` a session id or `_` for the only open session:
    /streamstyle/<session>/prompt   s          switch the prompt
    /streamstyle/<session>/preset   s          apply a preset by name
    /streamstyle/<session>/blend    f | s s f  weight 0..1 between two prompts (setting them)
    /streamstyle/<session>/strength f
    /streamstyle/<session>/steps    i          (a float with an integral value is taken, as
                                               TouchDesigner and Resolume send floats)
    /streamstyle/<session>/enabled  i | T/F | f
    /streamstyle/<session>/record   i | T/F | f [s]  start (1) or stop (0) recording: its output, or
                                               (s) "output", "inputs" (a capture) or "both"

What must hold: this thread never touches the service; it parses each datagram, turns each
well-formed message into a `control.Command` and queues it for the loop. A datagram that is not
OSC, an unknown address, wrong arguments or a full queue is ignored and counted in `bad`
(this thread is its only writer; `stats` and the metrics read it). Values are checked again by
the loop with the protocol's rules, and refusals there are counted as `controls_rejected`.
"""

from __future__ import annotations

import logging
import re
import socket
import threading

from pythonosc import osc_packet

from .control import Command, ControlQueue

log = logging.getLogger("streamstyle.service")

ADDRESS = re.compile(r"/streamstyle/(_|[1-9][0-9]{0,18})/(prompt|preset|blend|strength|steps|enabled|record)")
MAX_DATAGRAM = 65536


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def command_of(address: str, args: list) -> Command | None:
    """The command an OSC message asks for, or None if it is not one of ours or its arguments
    are not of the address's shape."""
    m = ADDRESS.fullmatch(address)
    if m is None:
        return None
    session = None if m.group(1) == "_" else int(m.group(1))
    op = m.group(2)
    if op in ("prompt", "preset"):
        ok = len(args) == 1 and isinstance(args[0], str)
        value = args[0] if ok else None
    elif op == "blend":
        if len(args) == 1 and _number(args[0]):
            ok, value = True, float(args[0])
        else:
            ok = len(args) == 3 and isinstance(args[0], str) and isinstance(args[1], str) and _number(args[2])
            value = (args[0], args[1], float(args[2])) if ok else None
    elif op == "strength":
        ok = len(args) == 1 and _number(args[0])
        value = float(args[0]) if ok else None
    elif op == "steps":
        ok = len(args) == 1 and _number(args[0]) and float(args[0]).is_integer()
        value = int(args[0]) if ok else None
    else:  # enabled, record (with an optional string: what to record)
        extra = op == "record" and len(args) == 2 and isinstance(args[1], str)
        ok = len(args) == 1 + extra and (isinstance(args[0], bool) or (_number(args[0]) and args[0] in (0, 1)))
        value = (bool(args[0]), args[1]) if ok and extra else bool(args[0]) if ok else None
    return Command(session, op, value, source="osc") if ok else None


class OscReceiver:
    """A daemon thread reading OSC datagrams on (host, port) into `controls`."""

    def __init__(self, controls: ControlQueue, host: str, port: int):
        self.controls = controls
        self.bad = 0
        self.received = 0
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._running = True
        self._thread = threading.Thread(target=self._run, name="streamstyle-osc", daemon=True)
        self._thread.start()
        log.info("OSC control on udp://%s:%d", host, self.port)

    def _run(self) -> None:
        while self._running:
            try:
                data, _ = self.sock.recvfrom(MAX_DATAGRAM)
            except socket.timeout:
                continue
            except OSError:
                return
            self.feed(data)

    def feed(self, data: bytes) -> None:
        try:
            messages = osc_packet.OscPacket(data).messages
        except Exception:  # python-osc raises ParseError, and more for some truncated datagrams
            self.bad += 1
            return
        for timed in messages:
            self.received += 1
            cmd = command_of(timed.message.address, list(timed.message.params))
            if cmd is None or not self.controls.put(cmd):
                self.bad += 1

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2)
        self.sock.close()
