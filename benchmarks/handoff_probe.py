"""Where a frame's round trip goes outside the model, hop by hop, over the real path.

Starts `streamstyle serve` as a child process whose socket and frame handling are timestamped (the
`_traced-serve` entry below wraps the real Service; nothing of the service is replaced), drives N
frames of one size through a ring from an engine-side client, and joins the two sides' timestamps
frame by frame: CLOCK_MONOTONIC is one clock for every process on a host.

The engine side is the Python client (`--client python`) or libstreamstyle (`--client c`, through
`engine_plugins/c/tests/probe.c`, built here with CMake unless `--probe-exe` names it). The split,
in microseconds, p50 and p99:

  submit call            the client's submit (encode + send for Python; ss_submit for C)
  to I/O thread send     C only: ss_submit returned -> the I/O thread's zmq_send returned
  to service poll        the client's send -> the service's zmq poll returned (libzmq's two I/O
                         threads, the socket, the service thread's wake-up); for a frame taken
                         from the doorbell (--doorbell on, the default), the send -> the take
  poll to recv           that poll returned -> recv_multipart returned
  service total_ms       the service's own time: the frame off the socket -> done computed
   (recv to queued)      inside total_ms: the frame message's decode and validation
  done to send           total_ms computed -> the done reply's send began
  to client recv         that send began -> the client took the reply off its socket (the send
                         call itself, libzmq's two I/O threads, the socket) or its doorbell
   (send to rung)        with a doorbell: that send began -> the answer's copy was in the lane
   (rung to client)      -> the client took it
  recv to seen           C: the I/O thread's receive -> ss_poll handed out the event;
                         Python: the receive -> poll() returned the event
  overhead               submit returned -> answer seen, minus total_ms (issue 14's figure)
(Against a service that starts total_ms after the decode, "done to send" comes out short by "recv
to queued".)

Usage:
  python benchmarks/handoff_probe.py --device cpu --size 64x48 --frames 300 --client c
  python benchmarks/handoff_probe.py --device cuda --size 1920x1080 --frames 1000 --client c --interval-ms 16.7
  python benchmarks/handoff_probe.py ... --profile   (the service under cProfile: its functions by own time)
The full per-frame table goes to $OUT (or /tmp) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
C_DIR = REPO / "engine_plugins" / "c"


# --- the traced service (runs in the child) ---------------------------------------------------

class _TracedSocket:
    """The service's ROUTER socket, timestamping its poll returns, receives and sends."""

    def __init__(self, sock, trace: dict):
        self._sock, self._trace = sock, trace

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def poll(self, *a, **k):
        r = self._sock.poll(*a, **k)
        self._trace["last_poll"] = time.monotonic_ns()
        return r

    def recv_multipart(self, *a, **k):
        r = self._sock.recv_multipart(*a, **k)
        self._trace["last_recv"] = time.monotonic_ns()
        return r


def _cpu() -> int:
    """The CPU this thread runs on (-1 where libc has no sched_getcpu)."""
    global _sched_getcpu
    if _sched_getcpu is None:
        import ctypes

        try:
            _sched_getcpu = ctypes.CDLL(None).sched_getcpu
        except (OSError, AttributeError):
            _sched_getcpu = lambda: -1  # noqa: E731
    return _sched_getcpu()


_sched_getcpu = None


def traced_serve(trace_path: str, serve_args: list[str]) -> int:
    from streamstyle.service import server
    from streamstyle.tools import cli

    trace = {"frames": {}}
    frames = trace["frames"]
    Service = server.Service
    init, queue_frame, send = Service.__init__, Service.queue_frame, Service.send_bytes

    def init_traced(self, *a, **k):
        init(self, *a, **k)
        self.sock = _TracedSocket(self.sock, trace)

    def queue_traced(self, state, msg):
        t = time.monotonic_ns()
        if (state.id, msg.seq) not in frames:  # the first copy (doorbell or socket) is the one taken
            if self._bell_of is state:  # taken from the doorbell: no poll of its own; perf_counter is CLOCK_MONOTONIC
                took = int(self._received_at * 1e9)
                frames[(state.id, msg.seq)] = {"poll": took, "recv": took, "queued": t, "bell": True,
                                               "cpu_recv": _cpu()}
            else:
                frames[(state.id, msg.seq)] = {"poll": trace.get("last_poll"), "recv": trace.get("last_recv"),
                                               "queued": t, "bell": False, "cpu_recv": _cpu()}
        return queue_frame(self, state, msg)

    def send_traced(self, identity, data, bell=None, staged=False):  # every reply goes out through send_bytes
        t = time.monotonic_ns()
        send(self, identity, data, bell, staged)
        sent = time.monotonic_ns()
        cpu = _cpu()
        msg = protocol.decode_raw(data)
        f = frames.get((msg.get("session"), msg.get("seq"))) if msg.get("type") in ("done", "late") else None
        if f is not None:
            f.update(send_start=t, sent=sent, answer=msg["type"], cpu_send=cpu,
                     pushed=trace.get("last_push") if bell is not None else None)

    from streamstyle.interop import protocol

    from streamstyle.interop import doorbell

    push = doorbell.Lane.push

    def push_traced(lane, data):  # when an answer's copy went into the doorbell
        ok = push(lane, data)
        trace["last_push"] = time.monotonic_ns()
        return ok

    publish = doorbell.Lane.publish

    def publish_traced(lane, data):  # when a staged answer (a frame's done) was published
        publish(lane, data)
        trace["last_push"] = time.monotonic_ns()

    doorbell.Lane.push, doorbell.Lane.publish = push_traced, publish_traced
    if os.environ.get("SS_PROBE_SERVICE_CPUS"):  # --service-cpus: the service's threads on these CPUs
        os.sched_setaffinity(0, {int(c) for c in os.environ["SS_PROBE_SERVICE_CPUS"].split(",")})
    if os.environ.get("SS_PROBE_SERVICE_WAIT") == "query":  # --service-wait query: a Python spin on the event
        import torch

        def spin(event):
            while not event.query():
                pass

        torch.cuda.Event.synchronize = spin
    Service.__init__, Service.queue_frame, Service.send_bytes = init_traced, queue_traced, send_traced
    try:
        return cli.main(["serve", *serve_args])
    finally:
        Path(trace_path).write_text(json.dumps([{"session": s, "seq": q, **f} for (s, q), f in frames.items()]))


# --- the engine side (this process) -----------------------------------------------------------

def run_python_client(address: str, args, w: int, h: int) -> list[dict]:
    from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
    from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
    from streamstyle.interop.client import Client
    from streamstyle.model.layout import reference_layout

    client = Client(address, timeout_s=120)
    stamps: dict = {}
    send = client._send

    def send_traced(msg):
        data = send(msg)
        if msg.get("type") == "frame":
            stamps["sent"] = time.monotonic_ns()
        return data

    dispatch = client._dispatch

    def dispatch_traced(m):  # answers from the doorbell or the socket, whichever came first
        if m.get("type") in ("done", "late", "error"):
            stamps.setdefault(m.get("seq"), time.monotonic_ns())
        return dispatch(m)

    client._send, client._dispatch = send_traced, dispatch_traced
    scene = Scene.generate(3)
    renderer = Renderer(scene, CameraPath("handheld", seed=3, extent=scene.extent), w, h, device=args.device)
    layout = reference_layout(w, h)
    slots = [to_slot(renderer.render(i), layout) for i in range(8)]
    cuda = args.device.startswith("cuda")
    session = client.open_session(w, h, layout, backend="cuda-ipc" if cuda else "shm", params={"steps": 2},
                                  prompt=None if args.no_prompts else "watercolor", doorbell=args.doorbell == "on")
    rows = []
    try:
        for i in range(args.frames + args.warmup):
            start = time.monotonic_ns()
            slot = session.acquire_slot(timeout_s=30)
            data = slots[i % len(slots)]
            if cuda:
                session.ring.input(slot)[: data.numel()].copy_(data)
            else:
                session.ring.input(slot)[: data.numel()] = data.numpy()
            if cuda:
                import torch

                torch.cuda.current_stream().synchronize()  # the ready event has completed when the frame goes
            t0 = time.monotonic_ns()
            seq = session.submit(slot)
            t1 = time.monotonic_ns()
            ev = client.wait(session, seq, timeout_s=60)
            seen = time.monotonic_ns()
            if i >= args.warmup and ev.status == "done":
                rows.append({"seq": seq, "submit0": t0, "submit1": t1, "sent": stamps.pop("sent", None),
                             "received": stamps.pop(seq, None), "seen": seen, "total_ms": ev.timings["total_ms"],
                             "model_ms": ev.timings["model_ms"]})
            stamps.pop(seq, None)
            _pace(start, args.interval_ms)
    finally:
        session.close()
        client.close()
    return rows


def _pace(start_ns: int, interval_ms: float) -> None:
    left = start_ns + interval_ms * 1e6 - time.monotonic_ns()
    if left > 0:
        time.sleep(left / 1e9)


def build_probe(out: Path) -> Path:
    build = out / "build-c"
    for cmd in (["cmake", "-S", str(C_DIR), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                ["cmake", "--build", str(build), "-j", "4", "--target", "ss_probe"]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"building ss_probe failed: {res.stdout[-2000:]}{res.stderr[-2000:]}")
    return build / "ss_probe"


def run_c_client(address: str, args, w: int, h: int, exe: Path) -> tuple[list[dict], str]:
    backend = "cuda-ipc" if args.device.startswith("cuda") else "shm"
    cmd = [str(exe), address, backend, str(w), str(h), str(args.frames + args.warmup), str(args.interval_ms), args.poll]
    env = {**os.environ, **({"SS_PROBE_NO_DOORBELL": "1"} if args.doorbell == "off" else {})}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
    if res.returncode != 0 or "RESULT ok" not in res.stdout:
        raise SystemExit(f"ss_probe failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-2000:]}")
    rows = []
    for m in re.finditer(r"^FRAME (.*)$", res.stdout, re.M):
        f = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
        rows.append({k: (int(v) if k not in ("total_ms", "model_ms") else v) for k, v in f.items()})
    summary = "\n".join(line for line in res.stdout.splitlines()
                        if re.match(r"^(TIMING|SPLIT|OVERHEAD|CLIENT|shm|cuda)", line))
    return rows[args.warmup:], summary


# --- the split --------------------------------------------------------------------------------

PARTS = [("submit call", "submit0", "submit1"), ("to I/O thread send", "submit1", "sent"),
         ("to service poll", "sent", "s_poll"), ("poll to recv", "s_poll", "s_recv"),
         ("service total_ms", None, None), (" (recv to queued)", "s_recv", "s_queued"), ("done to send", None, None),
         ("to client recv", "s_send", "received"), ("  (send to rung)", "s_send", "s_pushed"),
         ("  (rung to client)", "s_pushed", "received"), ("recv to seen", "received", "seen"), ("overhead", None, None)]


def frame_parts(r: dict, s: dict) -> dict[str, float]:
    """One frame's parts (PARTS' names, microseconds): `r` the client's row, `s` the service's
    record of the same frame; a part whose stamps are missing is left out."""
    r = {**r, "s_poll": s["poll"], "s_recv": s["recv"], "s_queued": s["queued"], "s_send": s["send_start"],
         "s_pushed": s.get("pushed")}
    out = {name: (r[b] - r[a]) / 1e3 for name, a, b in PARTS if a and r.get(a) is not None and r.get(b) is not None}
    out["service total_ms"] = r["total_ms"] * 1e3
    out["done to send"] = (s["send_start"] - s["recv"]) / 1e3 - r["total_ms"] * 1e3
    out["overhead"] = (r["seen"] - r["submit1"]) / 1e3 - r["total_ms"] * 1e3
    return out


def _done_frames(rows: list[dict], service: dict):
    for r in rows:
        s = service.get(r["seq"])
        if s is not None and s.get("answer") == "done":
            yield r, frame_parts(r, s)


def split(rows: list[dict], service: dict, client: str) -> dict[str, list[float]]:
    """Each part's microseconds per frame; "to I/O thread send" only for the C client (the Python
    client sends inside its submit call)."""
    out: dict[str, list[float]] = {name: [] for name, _, _ in PARTS}
    for _, parts in _done_frames(rows, service):
        for name, us in parts.items():
            out[name].append(us)
    if client != "c":
        out.pop("to I/O thread send")
    return {k: v for k, v in out.items() if v}


WORST_PARTS = ("to I/O thread send", "to service poll", "poll to recv", "done to send", "  (send to rung)",
               "  (rung to client)", "recv to seen")  # the hops outside total_ms


def _print_worst(rows: list[dict], service: dict, n: int = 6) -> None:
    """The n frames with the largest overhead, each split into its hops (what a p99 is made of)."""
    worst = sorted(_done_frames(rows, service), key=lambda rp: -rp[1]["overhead"])
    for r, parts in worst[:n]:
        print(f"  worst: seq {r['seq']} overhead {parts['overhead']:.1f} us"
              + ("" if r.get("woke") is None else f" woke={r['woke']}") + ": "
              + ", ".join(f"{k.strip()} {parts[k]:.1f}" for k in WORST_PARTS if k in parts))


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_traced-serve":
        return traced_serve(argv[1], argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--client", choices=("python", "c"), default="python")
    ap.add_argument("--interval-ms", type=float, default=0.0,
                    help="frame pacing: each frame starts this long after the last one started (a game at 60 "
                         "fps: 16.7); 0: back to back")
    ap.add_argument("--poll", choices=("spin", "yield"), default="yield", help="C client: how its render thread "
                    "calls ss_poll while it waits (yield: sched_yield between calls)")
    ap.add_argument("--doorbell", choices=("on", "off"), default="on",
                    help="give the session a doorbell (docs/protocol.md, 'The doorbell'), or ZeroMQ alone")
    ap.add_argument("--probe-exe", type=Path, help="a built ss_probe (else built here with CMake)")
    ap.add_argument("--preset", help="the service's model preset (e.g. tiny on a CPU)")
    ap.add_argument("--cpu-threads", type=int)
    ap.add_argument("--no-prompts", action="store_true", help="serve without the text encoder")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--service-cpus", help="comma-separated CPUs the service's threads may run on (an experiment)")
    ap.add_argument("--service-wait", choices=("synchronize", "query"), default="synchronize",
                    help="how the service waits for a frame's last event: as it does (synchronize), or a "
                         "Python loop on event.query() (an experiment)")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    args = ap.parse_args(argv)

    w, h = (int(v) for v in args.size.split("x"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="probe-"))
    exe = args.probe_exe or (build_probe(out) if args.client == "c" else None)
    address, ready, trace = f"ipc://{work}/s.sock", work / "ready", work / "trace.json"
    serve = ["--bind", address, "--ready-file", str(ready), "--device", args.device, "--quiet", "--deadline-ms", "10000"]
    serve += ["--preset", args.preset] if args.preset else []
    serve += ["--cpu-threads", str(args.cpu_threads)] if args.cpu_threads else []
    serve += ["--no-prompts"] if args.no_prompts else []
    prof = out / f"service-{args.size}.prof"
    pre = [sys.executable, "-m", "cProfile", "-o", str(prof)] if args.profile else [sys.executable]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO.parent), os.environ.get("PYTHONPATH", "")]),
           "SS_PROBE_SERVICE_WAIT": args.service_wait, "SS_PROBE_SERVICE_CPUS": args.service_cpus or ""}
    proc = subprocess.Popen([*pre, str(Path(__file__).resolve()), "_traced-serve", str(trace), *serve], env=env)
    summary = ""
    try:
        while not ready.exists():
            if proc.poll() is not None:
                raise SystemExit("the service exited before it was ready")
            time.sleep(0.1)
        if args.client == "c":
            rows, summary = run_c_client(address, args, w, h, exe)
        else:
            rows = run_python_client(address, args, w, h)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    service = {f["seq"]: f for f in json.loads(trace.read_text())}
    parts = split(rows, service, args.client)
    shutil.rmtree(work, ignore_errors=True)

    backend = "cuda-ipc" if args.device.startswith("cuda") else "shm"
    belled = sum(1 for r in rows if service.get(r["seq"], {}).get("bell"))
    print(f"{args.size} {backend} client={args.client} frames={len(rows)} interval_ms={args.interval_ms}"
          + (f" poll={args.poll}" if args.client == "c" else "") + f" doorbell={args.doorbell}"
          + f" frames_taken_from_the_doorbell={belled}")
    moved = [f for f in service.values() if f.get("cpu_send") is not None and f.get("cpu_recv") is not None]
    if moved:
        print(f"  service thread on another CPU at the answer than at the frame's take: "
              f"{sum(f['cpu_send'] != f['cpu_recv'] for f in moved)} of {len(moved)} frames; CPUs used: "
              f"{sorted({f['cpu_send'] for f in moved} | {f['cpu_recv'] for f in moved})}")
    for name, _, _ in PARTS:
        if name in parts:
            xs = parts[name]
            print(f"  {name:20} p50 {pct(xs, .5):9.1f} us  p99 {pct(xs, .99):9.1f} us")
    woke = [r for r in rows if r.get("woke")]
    if args.client == "c":
        print(f"  submits that had to wake the I/O thread: {len(woke)} of {len(rows)}")
    _print_worst(rows, service)
    if summary:
        print(summary)
    dump = out / (f"handoff-{args.client}-{backend}-{args.size}-{args.interval_ms:g}ms"
                  + (f"-{args.poll}" if args.client == "c" else "") + f"-bell-{args.doorbell}.json")
    dump.write_text(json.dumps({"rows": rows, "service": list(service.values())}))
    print(f"per-frame table: {dump}")
    if args.profile:
        pstats.Stats(str(prof)).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
