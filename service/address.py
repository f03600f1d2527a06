"""Whether the service may bind its address: one live service per address, stale sockets cleaned.

What must hold:
- `claim_address` raises `AddressInUseError` when another live process listens on the address,
  and changes nothing then. libzmq would not: binding `ipc://PATH` unlinks whatever is at PATH
  and binds afresh, so a second service silently takes the address over and the first keeps
  running, unreachable. Hence the probe: a plain Unix-socket connect to PATH. If something
  accepts, a live service holds it; if the connect is refused, the socket file is stale (its
  service died without removing it) and is removed here, so the bind that follows starts clean.
- Anything at PATH that is not a socket is refused, never removed.
- For `tcp://`, a listener on the port is found by a trial bind with the options libzmq uses
  (SO_REUSEADDR), so TIME_WAIT leftovers do not count as taken; the service's own bind turns
  a remaining EADDRINUSE (a race) into the same error (`server.Service`).
The check runs before the model loads (`streamstyle serve` fails in well under a second) and
again just before the bind (`bind_router`, which also sets every socket option the contract
asks of the service's ROUTER: the single service and the multi-worker front bind with it).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from urllib.parse import urlparse

import zmq

from ..interop.errors import ErrorCode, StreamStyleError
from ..interop.limits import SOCKET_HWM, SOCKET_MAX_MESSAGE_BYTES


class AddressInUseError(StreamStyleError, OSError):
    """Another live process listens on the service's address."""

    code = ErrorCode.ADDRESS_IN_USE


def in_use_message(address: str) -> str:
    return (f"{address} is in use by another live service; stop it or give another --bind "
            "(only one service may serve an address)")


def claim_address(address: str) -> None:
    """Raise AddressInUseError if a live process listens on `address`; remove a stale ipc socket."""
    if address.startswith("ipc://"):
        _claim_ipc(address, address[len("ipc://"):])
    elif address.startswith("tcp://"):
        _claim_tcp(address)


def _claim_ipc(address: str, path: str) -> None:
    if path.startswith("@"):
        return  # Linux's abstract namespace: no file, and a second bind fails by itself
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AddressInUseError(f"{address}: {path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        # Nobody listens: the file is what a killed service left behind.
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    except OSError as exc:
        if exc.errno == errno.EAGAIN:  # a full accept backlog is a live (busy) listener
            raise AddressInUseError(in_use_message(address)) from None
        raise AddressInUseError(f"{address}: cannot probe {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise AddressInUseError(in_use_message(address))


def _claim_tcp(address: str) -> None:
    url = urlparse(address)
    try:
        port = url.port
    except ValueError:
        return  # not a numeric port (a wildcard): the bind itself decides
    host = url.hostname or ""
    if not port or host in ("", "*"):
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return  # the bind will say what is wrong with the host
    family, _, _, _, sockaddr = infos[0]
    trial = socket.socket(family, socket.SOCK_STREAM)
    try:
        trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        trial.bind(sockaddr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUseError(in_use_message(address)) from None
        # Other failures (a host not on this machine, a privileged port) are the bind's to report.
    finally:
        trial.close()


def bind_router(config, context: zmq.Context) -> zmq.Socket:
    """The service's public ROUTER on `config.address`, with every option the contract sets
    (limits, liveness, CURVE); AddressInUseError if another live service holds the address. The
    single service and the multi-worker front (`service.front`) both bind with this."""
    claim_address(config.address)  # libzmq would silently take an ipc:// address over from a live service
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    # ZeroMQ drops a peer whose message exceeds MAXMSGSIZE without a word; set it above the
    # protocol's limit so a moderately oversize message reaches the decoder and gets a typed
    # error, while a huge one still cannot make the service buffer it.
    sock.setsockopt(zmq.MAXMSGSIZE, SOCKET_MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.SNDHWM, SOCKET_HWM)
    sock.setsockopt(zmq.RCVHWM, SOCKET_HWM)
    # A send to a peer whose connection is gone fails (EHOSTUNREACH) instead of vanishing:
    # the periodic heartbeat is then a liveness probe that libzmq answers from its own I/O
    # thread, so a killed engine is reaped within one heartbeat however busy either side is.
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    if config.curve_secret_key:
        sock.curve_server = True
        sock.curve_secretkey = config.curve_secret_key.encode()
        sock.curve_publickey = config.curve_public_key.encode()
    # ZeroMQ's own heartbeats (ZMTP PING/PONG), answered by libzmq's I/O thread even while a
    # frame holds this thread for seconds: a peer that stops answering for reap_after_ms
    # (killed, frozen) loses its connection, and a long frame keeps every connection up.
    # Clients bound their own wait the same way (HEARTBEAT_TIMEOUT on their DEALER, from the
    # welcome); the TTL sent with each PING is only a hint to those that set none.
    sock.setsockopt(zmq.HEARTBEAT_IVL, config.heartbeat_ms)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, config.reap_after_ms)
    sock.setsockopt(zmq.HEARTBEAT_TTL, min(config.reap_after_ms, 6_553_500))  # ZMTP's maximum
    addr = config.address
    if addr.startswith("ipc://"):
        os.makedirs(os.path.dirname(addr[len("ipc://"):]) or ".", exist_ok=True)
    try:
        sock.bind(addr)
    except zmq.ZMQError as exc:
        sock.close(linger=0)
        if exc.errno == zmq.EADDRINUSE:
            raise AddressInUseError(in_use_message(addr)) from None
        raise
    return sock
