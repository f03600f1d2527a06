"""What the studio side adds to the frame path: its p50/p99 with the preview page and recording
off and on.

A real service runs in this process (built by the service's own loader, its loop on a thread,
each studio hook the loop calls timed in place); the engine is a second process (the real client
over a real ring: shared memory on the CPU, CUDA IPC on a GPU), and so are the page, the
Prometheus scraper and the OSC sender, as they would be in use (in this process they would
compete with the loop for the GIL, which a browser does not). The configurations below run in
interleaved rounds within one service and one session, the order rotated each round, so that the
machine's drift is spread over all of them. Metrics are on in every row (one histogram update per
frame); recordings are deleted as soon as each segment's stop is answered.

"frame path" is the service's own FRAME-received-to-DONE-sent time; "round trip" is the engine's,
from submitting a frame to reading its answer (it also sees what the loop does after DONE).

    python benchmarks/bench_studio.py --size 320x192 --frames 240
    python -m streamstyle.benchmarks.bench_studio --device cuda --size 1080p --frames 2000

The studio extra's packages (prometheus-client, python-osc, pillow) and the video extra
(imageio-ffmpeg) are used where installed; a row that needs a missing one is left out, and says so.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

PROMPT = "film noir"
# name -> what runs meanwhile: the page polling (and showing an input channel), a recording, the
# scraper, OSC changes at 30 Hz.
CONFIGS = {
    "off": {},
    "page": {"page": True},
    "page + input view": {"page": True, "beside": "depth"},
    "record output": {"record": "output"},
    "record inputs": {"record": "inputs"},
    "record both": {"record": "both"},
    "everything": {"page": True, "beside": "depth", "record": "both", "scrape": True, "osc": True},
}


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


# --- the other processes ----------------------------------------------------------------------

def _engine(conn, address: str, width: int, height: int, device: str, prompt: str | None) -> None:
    """The engine: renders 8 reference-engine frames once, then runs lockstep frames on request."""
    import torch

    from streamstyle.engine_plugins.reference_engine import CameraPath, Renderer, Scene
    from streamstyle.engine_plugins.reference_engine.gbuffers import to_slot
    from streamstyle.interop.client import Client
    from streamstyle.model.layout import reference_layout

    torch.set_num_threads(1)
    scene = Scene.generate(5, objects=12)
    r = Renderer(scene, CameraPath("handheld", seed=5, extent=scene.extent), width, height, device=device)
    layout = reference_layout(width, height)
    frames = [to_slot(r.render(i), layout) for i in range(8)]
    backend = "cuda-ipc" if device.startswith("cuda") else "shm"
    with Client(address, timeout_s=300) as client:
        session = client.open_session(width, height, layout, backend=backend, prompt=prompt)
        conn.send(("open", session.id))
        i = 0
        while True:
            cmd = conn.recv()
            if cmd[0] == "stop":
                break
            out = []
            for _ in range(cmd[1]):
                slot = session.acquire_slot(timeout_s=60)
                torch.as_tensor(session.ring.input(slot)).copy_(frames[i % len(frames)])  # numpy (shm) or CUDA
                i += 1
                t0 = time.perf_counter()
                ev = client.wait(session, session.submit(slot, dt=1 / 60), timeout_s=300)
                rtt = (time.perf_counter() - t0) * 1000
                out.append((ev.status, ev.timings["total_ms"] if ev.status == "done" else None, rtt,
                            bool(ev.late) if ev.status == "done" else True))
            conn.send(("ran", out))
        session.close()
    conn.send(("closed", None))


def _clients(conn, ports: dict) -> None:
    """The page (frames at 15 fps, and the input view when asked), the scraper (every 0.5 s) and
    OSC (strength at 30 Hz), switched on and off by the flags the parent sends."""
    import urllib.request

    flags: dict = {}
    stop = threading.Event()

    def every(period, flag, fn):
        while not stop.is_set():
            if flags.get(flag):
                try:
                    fn()
                except OSError:
                    pass
            stop.wait(period)

    def page():
        urllib.request.urlopen(f"http://127.0.0.1:{ports['preview']}/frame.jpg", timeout=5).read()
        if flags.get("beside"):
            urllib.request.urlopen(f"http://127.0.0.1:{ports['preview']}/beside.jpg", timeout=5).read()

    def scrape():
        urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=5).read()

    sent = [0]

    def osc():
        from pythonosc.udp_client import SimpleUDPClient

        SimpleUDPClient("127.0.0.1", ports["osc"]).send_message("/streamstyle/_/strength", 0.4 + 0.2 * (sent[0] % 2))
        sent[0] += 1

    threads = [threading.Thread(target=every, args=a, daemon=True) for a in
               ((1 / 15, "page", page), (0.5, "scrape", scrape), (1 / 30, "osc", osc))]
    for t in threads:
        t.start()
    while True:
        msg = conn.recv()
        if msg is None:
            break
        flags.clear()
        flags.update(msg)
        conn.send("ok")
    stop.set()


# --- this process: the service -----------------------------------------------------------------

class Hooks:
    """Each hook's call times, kept per configuration (`current`)."""

    def __init__(self):
        self.current = "warm-up"
        self.times: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))

    def wrap(self, obj, name: str, label: str | None = None) -> None:
        fn = getattr(obj, name)
        label = label or name

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.times[self.current][label].append(time.perf_counter() - t0)

        setattr(obj, name, timed)


def control(svc, op: str, value=None, timeout: float = 300.0) -> dict:
    """A studio command through the service's queue (as OSC and the page send them); its answer."""
    from concurrent.futures import Future

    from streamstyle.service.control import Command

    fut: Future = Future()
    assert svc.controls.put(Command(None, op, value, source="bench", reply=fut))
    return fut.result(timeout=timeout)


def run(args) -> dict:
    import multiprocessing as mp

    import torch

    from streamstyle.service import recorder as R
    from streamstyle.service.config import ServiceConfig
    from streamstyle.service.loader import build_stylizer, set_cpu_threads
    from streamstyle.service.preview import PAGE_IDLE_S
    from streamstyle.service.server import GIL_SWITCH_INTERVAL_S, Service

    w, h = args.size
    have = {name: importlib.util.find_spec(mod) is not None for name, mod in
            (("metrics", "prometheus_client"), ("osc", "pythonosc"), ("preview", "PIL"), ("video", "imageio_ffmpeg"))}
    tmp = Path(tempfile.mkdtemp(prefix="bench-studio-"))
    rec_dir = Path(args.recordings or tmp / "rec")
    ports = {"metrics": free_port() if have["metrics"] else 0, "osc": free_port(socket.SOCK_DGRAM) if have["osc"] else 0,
             "preview": free_port() if have["preview"] else 0}
    cfg = ServiceConfig(bind=f"ipc://{tmp}/bench.sock", device=args.device, preset=args.preset, weights=args.weights,
                        dtype=args.dtype, recordings_dir=str(rec_dir), metrics_port=ports["metrics"],
                        osc_port=ports["osc"], preview_port=ports["preview"])
    set_cpu_threads(cfg)
    from streamstyle.model.errors import PromptError

    prompt = PROMPT
    try:
        stylizer, trained = build_stylizer(cfg, prompts=True)
        stylizer.prompts.encode(prompt)
    except PromptError as exc:  # no copy of the text encoder's weights: the captures have no targets then
        print(f"no prompt encoder here ({exc}); the session runs without a prompt")
        stylizer, trained = build_stylizer(cfg, prompts=False)
        prompt = None
    svc = Service(cfg, stylizer)
    hooks = Hooks()
    hooks.wrap(svc, "_tap_inputs", "input copies (capture, input view)")
    hooks.wrap(svc, "drain_controls", "command queue drain")
    if svc.metrics is not None:
        hooks.wrap(svc.metrics, "on_frame", "metrics update")
    if svc.preview is not None:
        hooks.wrap(svc.preview, "hand_over", "preview snapshot")
    offer = R.VideoRecorder.offer

    def timed_offer(self, output):  # the recorder exists only while recording: timed at its class
        t0 = time.perf_counter()
        try:
            return offer(self, output)
        finally:
            hooks.times[hooks.current]["MP4 copy"].append(time.perf_counter() - t0)

    R.VideoRecorder.offer = timed_offer
    loop = threading.Thread(target=svc.run, daemon=True)
    loop.start()

    configs, left_out = {}, {}
    for name, c in CONFIGS.items():
        need = [k for k, part in (("page", "preview"), ("scrape", "metrics"), ("osc", "osc")) if c.get(k) and not have[part]]
        if c.get("record") in ("output", "both") and not have["video"]:
            need.append("video extra (imageio-ffmpeg)")
        if need:
            left_out[name] = ", ".join(need)
        else:
            configs[name] = c
    ctx = mp.get_context("spawn")
    engine_conn, child = ctx.Pipe()
    engine = ctx.Process(target=_engine, args=(child, svc.address, w, h, args.device, prompt), daemon=True)
    engine.start()
    clients_conn, child = ctx.Pipe()
    clients = ctx.Process(target=_clients, args=(child, ports), daemon=True)
    clients.start()
    rows = {name: {"total": [], "rtt": [], "late": 0, "recorded": 0, "left_out": 0} for name in configs}
    try:
        assert engine_conn.recv()[0] == "open"
        engine_conn.send(("run", args.warmup))
        engine_conn.recv()
        per = max(1, args.frames // args.rounds)
        names = list(configs)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                c = configs[name]
                if c.get("beside"):
                    control(svc, "view", c["beside"])
                if c.get("record"):
                    control(svc, "record", (True, c["record"]))  # answered once the writers are ready
                clients_conn.send({k: c.get(k, False) for k in ("page", "beside", "scrape", "osc")})
                clients_conn.recv()
                if c.get("page"):
                    time.sleep(0.3)  # the page's first requests: from then on the loop hands snapshots over
                hooks.current = name
                engine_conn.send(("run", per))
                _, out = engine_conn.recv()
                hooks.current = "between"
                clients_conn.send({})
                clients_conn.recv()
                row = rows[name]
                for status, total, rtt, late in out:
                    row["rtt"].append(rtt)
                    row["late"] += int(late)
                    if total is not None:
                        row["total"].append(total)
                if c.get("record"):
                    got = control(svc, "record", (False, None))  # answered once the files are complete
                    row["recorded"] += got.get("capture_frames", got.get("frames", 0))
                    row["left_out"] += got.get("capture_dropped", got.get("skipped", 0))
                    shutil.rmtree(rec_dir, ignore_errors=True)  # a 1080p capture is 70 MB a frame
                if c.get("beside"):
                    control(svc, "view", None)
                if c.get("page"):
                    time.sleep(PAGE_IDLE_S + 0.2)  # until the service counts the page as gone and stops copying
        engine_conn.send(("stop",))
        engine_conn.recv()
    finally:
        clients_conn.send(None)
        engine.join(60)
        clients.join(10)
        svc.stop()
        loop.join(60)
        R.VideoRecorder.offer = offer
        shutil.rmtree(tmp, ignore_errors=True)
    for name, row in rows.items():  # the check before the figures: every frame served was recorded or counted
        if configs[name].get("record") and row["recorded"] + row["left_out"] != len(row["total"]):
            raise RuntimeError(f"{name}: {len(row['total'])} frames served, but {row['recorded']} recorded and "
                               f"{row['left_out']} counted as left out")
    dev = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "CPU"
    off = statistics.median(rows["off"]["total"]) if rows.get("off", {}).get("total") else None
    table = []
    for name, row in rows.items():
        p50 = statistics.median(row["total"]) if row["total"] else float("nan")
        table.append({"config": name, "frames": len(row["rtt"]), "p50_ms": p50, "p99_ms": pct(row["total"], 0.99),
                      "vs_off_pct": (p50 / off - 1) * 100 if off else None, "rtt_p50_ms": pct(row["rtt"], 0.5),
                      "rtt_p99_ms": pct(row["rtt"], 0.99), "late": row["late"],
                      "recorded": row["recorded"], "left_out": row["left_out"]})
    hook_rows = []
    for name in configs:
        for label, xs in sorted(hooks.times[name].items()):
            hook_rows.append({"config": name, "hook": label, "calls": len(xs), "p50_us": pct(xs, 0.5) * 1e6,
                              "p99_us": pct(xs, 0.99) * 1e6})
    return {"device": dev, "size": f"{w}x{h}", "switch_interval_ms": GIL_SWITCH_INTERVAL_S * 1000, "prompt": prompt, "model": args.weights or args.preset or "the shipped default",
            "trained": trained, "dtype": args.dtype, "rounds": args.rounds, "frames_per_config": per * args.rounds,
            "rows": table, "hooks": hook_rows, "left_out": left_out}


def format_report(rep: dict) -> str:
    lines = [f"Studio cost on the frame path: {rep['device']}, {rep['size']}, model {rep['model']} "
             f"({'trained' if rep['trained'] else 'untrained'}, {rep['dtype']}), {rep['frames_per_config']} frames per row "
             f"in {rep['rounds']} interleaved rounds; the service's GIL switch interval {rep['switch_interval_ms']:g} ms",
             "frame path = the service's FRAME received to DONE sent; round trip = the engine's submit to answer (ms)",
             f"{'config':<20} {'frames':>6} {'p50':>8} {'p99':>8} {'vs off':>7} {'rtt p50':>8} {'rtt p99':>8} "
             f"{'late':>5} {'recorded':>8} {'left out':>8}"]
    for r in rep["rows"]:
        vs = f"{r['vs_off_pct']:+6.1f}%" if r["vs_off_pct"] is not None else "      -"
        lines.append(f"{r['config']:<20} {r['frames']:>6} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {vs:>7} "
                     f"{r['rtt_p50_ms']:>8.3f} {r['rtt_p99_ms']:>8.3f} {r['late']:>5} {r['recorded']:>8} {r['left_out']:>8}")
    for name, why in rep["left_out"].items():
        lines.append(f"{name:<20} left out: needs {why}")
    lines += ["", "hooks the loop calls, timed in place (us per call)",
              f"{'config':<20} {'hook':<36} {'calls':>6} {'p50':>9} {'p99':>9}"]
    for h in rep["hooks"]:
        lines.append(f"{h['config']:<20} {h['hook']:<36} {h['calls']:>6} {h['p50_us']:>9.1f} {h['p99_us']:>9.1f}")
    return "\n".join(lines)


def main(argv=None):
    from streamstyle.tools.cli import parse_size

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=(320, 192))
    ap.add_argument("--frames", type=int, default=240, help="frames per configuration, over all rounds")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", help="an untrained preset (default: tiny on the CPU, the shipped model on a GPU)")
    ap.add_argument("--weights", help="a checkpoint to serve")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--recordings", help="where recordings go meanwhile (default: a temporary folder)")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args(argv)
    if args.preset is None and args.weights is None and args.device == "cpu":
        args.preset = "tiny"
    rep = run(args)
    print(format_report(rep))
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
