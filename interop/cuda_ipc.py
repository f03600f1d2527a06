"""The `cuda-ipc` ring backend: device memory and events shared between processes.

The engine allocates the ring with `cudaMalloc` (legacy CUDA IPC works only on such memory, not on
`cuMemCreate` allocations such as PyTorch's expandable segments), exports one IPC memory handle for
it and an interprocess event per slot and signal (ready, released, done). Handles travel as their
64 raw bytes, read with `ctypes.string_at(handle.getPtr(), 64)`, which works with cuda-bindings
before and after 13.4 (13.4 removed the `reserved` field). A handle names the whole allocation, so
each region carries its offset; the service checks offset and size against the real allocation
(`cuMemGetAddressRange`) before it views anything.

Ordering is on the GPU, never a host sync per frame: the engine records `ready` on its stream after
writing a slot; the service makes its stream wait on it, records `released` once its reads are
queued and `done` after writing the output. A CUDA event wait binds to the event's latest record,
so the engine waits on `released`/`done` only after the service has answered that frame (the
service records before it replies); the client enforces this.

An IPC handle opened twice in one process yields the same pointer, and closing it unmaps it for
both: opened allocations are reference-counted per process.
"""

from __future__ import annotations

import ctypes
import threading

import torch

from .errors import RingError
from .limits import CUDA_IPC_HANDLE_BYTES, MIN_SLOTS

_lock = threading.Lock()
_opened: dict[bytes, list] = {}  # handle bytes -> [device pointer, refcount]


def _rt():
    try:
        from cuda.bindings import driver, runtime
    except ImportError:  # cuda-python before the cuda.bindings namespace
        try:
            from cuda import cuda as driver, cudart as runtime  # type: ignore
        except ImportError:
            raise RingError("the cuda-ipc backend needs cuda-python (pip install cuda-python)") from None
    return runtime, driver


def _check(result, what: str):
    err = result[0]
    if int(err) != 0:
        raise RingError(f"{what} failed: {err}")
    return result[1] if len(result) == 2 else result[1:]


def _stream_handle():
    return torch.cuda.current_stream().cuda_stream


def _as_stream(rt, raw: int):
    try:
        return rt.cudaStream_t(raw)
    except TypeError:
        return rt.cudaStream_t(init_value=raw)


def handle_bytes(handle) -> bytes:
    return ctypes.string_at(handle.getPtr(), CUDA_IPC_HANDLE_BYTES)


def _handle_from(cls, raw: bytes):
    h = cls()
    ctypes.memmove(h.getPtr(), raw, CUDA_IPC_HANDLE_BYTES)
    return h


class _DeviceBytes:
    """A [n] uint8 view of raw device memory for torch (zero-copy; the stream field is None, so
    torch does no ordering of its own: events do it)."""

    def __init__(self, ptr: int, n: int):
        self.__cuda_array_interface__ = {"shape": (n,), "typestr": "|u1", "data": (ptr, False),
                                         "version": 3, "strides": None, "stream": None}


def _view(ptr: int, n: int, device: int) -> torch.Tensor:
    return torch.as_tensor(_DeviceBytes(ptr, n), device=f"cuda:{device}")


def _align(n: int, a: int = 512) -> int:
    return (n + a - 1) // a * a


class CudaIpcRing:
    """The engine side: owns the allocation and the events."""

    backend = "cuda-ipc"

    def __init__(self, device, ptr, total, slots, input_bytes, output_bytes, events):
        self.device, self.ptr, self.total = device, ptr, total
        self.slots, self.input_bytes, self.output_bytes = slots, input_bytes, output_bytes
        self.events = events  # {"ready": [...], "released": [...], "done": [...]}
        self._ins = [i * _align(input_bytes) for i in range(slots)]
        base = slots * _align(input_bytes)
        self._outs = [base + i * _align(output_bytes) for i in range(slots)]
        self._inputs = [_view(ptr + o, input_bytes, device) for o in self._ins]
        self._outputs = [_view(ptr + o, output_bytes, device) for o in self._outs]
        rt, _ = _rt()
        self._mem_handle = handle_bytes(_check(rt.cudaIpcGetMemHandle(ptr), "cudaIpcGetMemHandle"))
        self._event_handles = {k: [handle_bytes(_check(rt.cudaIpcGetEventHandle(e), "cudaIpcGetEventHandle"))
                                   for e in evs] for k, evs in events.items()}

    @classmethod
    def create(cls, slots: int, input_bytes: int, output_bytes: int, device: int = 0) -> "CudaIpcRing":
        if slots < MIN_SLOTS:
            raise RingError(f"a ring needs at least {MIN_SLOTS} slots, got {slots}")
        if not torch.cuda.is_available():
            raise RingError("the cuda-ipc backend needs a CUDA device")
        rt, _ = _rt()
        torch.cuda.set_device(device)
        torch.cuda.init()
        total = slots * (_align(input_bytes) + _align(output_bytes))
        ptr = int(_check(rt.cudaMalloc(total), "cudaMalloc"))
        _check((rt.cudaMemset(ptr, 0, total)[0], None), "cudaMemset")
        flags = rt.cudaEventDisableTiming | rt.cudaEventInterprocess
        events = {k: [_check(rt.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags") for _ in range(slots)]
                  for k in ("ready", "released", "done")}
        return cls(device, ptr, total, slots, input_bytes, output_bytes, events)

    def input(self, slot: int) -> torch.Tensor:
        return self._inputs[slot]

    def output(self, slot: int) -> torch.Tensor:
        return self._outputs[slot]

    def mark_ready(self, slot: int, seq: int) -> None:
        rt, _ = _rt()
        _check((rt.cudaEventRecord(self.events["ready"][slot], _as_stream(rt, _stream_handle()))[0], None), "cudaEventRecord")

    def is_released(self, slot: int, seq: int) -> bool:
        """Unknown from the host without a sync: the client relies on the frame's answer."""
        return seq == 0

    def wait_released(self, slot: int, seq: int, timeout_s: float) -> bool:
        """Order the engine's stream after the service's reads of this slot (no host wait). Call
        only once the service has answered frame `seq`."""
        if seq:
            rt, _ = _rt()
            _check((rt.cudaStreamWaitEvent(_as_stream(rt, _stream_handle()), self.events["released"][slot], 0)[0], None),
                   "cudaStreamWaitEvent")
        return True

    def wait_done(self, slot: int) -> None:
        """Order the engine's stream after the service's write of output `slot` (no host wait)."""
        rt, _ = _rt()
        _check((rt.cudaStreamWaitEvent(_as_stream(rt, _stream_handle()), self.events["done"][slot], 0)[0], None),
               "cudaStreamWaitEvent")

    def is_done(self, slot: int, seq: int) -> bool:
        rt, _ = _rt()
        return int(rt.cudaEventQuery(self.events["done"][slot])[0]) == 0

    def describe(self, output_format: str = "rgba8") -> dict:
        def region(o, n):
            return {"handle": self._mem_handle, "offset": o, "size": n, "device": self.device}

        return {"backend": "cuda-ipc", "slots": self.slots, "output_format": output_format,
                "inputs": [region(o, self.input_bytes) for o in self._ins],
                "outputs": [region(o, self.output_bytes) for o in self._outs],
                "sync": {k: list(v) for k, v in self._event_handles.items()}}

    def close(self) -> None:
        if self.ptr is None:
            return
        rt, _ = _rt()
        torch.cuda.synchronize(self.device)
        self._inputs, self._outputs = [], []
        for evs in self.events.values():
            for e in evs:
                rt.cudaEventDestroy(e)
        rt.cudaFree(self.ptr)
        self.ptr = None


class ImportedCudaIpcRing:
    """The service side of a `cuda-ipc` ring."""

    backend = "cuda-ipc"

    def __init__(self, device, opened, inputs, outputs, events, slots):
        self.device, self._opened_handles = device, opened
        self._inputs, self._outputs, self.events, self.slots = inputs, outputs, events, slots
        # The frame path makes three runtime calls per frame; each looked up the module, asked
        # torch for its current stream object and built a cudaStream_t (~15 us a call on an
        # H200's host). The raw stream is read directly and its wrapper kept while it is the same.
        self._rt = _rt()[0]
        self._raw_stream: int | None = None
        self._stream = None

    def _current_stream(self):
        raw = torch._C._cuda_getCurrentRawStream(self.device)
        if raw != self._raw_stream:
            self._raw_stream, self._stream = raw, _as_stream(self._rt, raw)
        return self._stream

    @classmethod
    def open(cls, desc: dict, input_bytes: int, output_bytes: int) -> "ImportedCudaIpcRing":
        if not torch.cuda.is_available():
            raise RingError("this service has no CUDA device for a cuda-ipc ring")
        rt, drv = _rt()
        device = torch.cuda.current_device()
        opened: list[bytes] = []
        events: dict[str, list] = {}
        try:
            def region(r: dict, need: int, what: str) -> torch.Tensor:
                if r["device"] not in (-1, device):
                    raise RingError(f"{what} is on device {r['device']}; this service runs on {device}")
                ptr = _open_mem(r["handle"], rt)
                opened.append(r["handle"])
                base, size = _check(drv.cuMemGetAddressRange(ptr), "cuMemGetAddressRange")
                base, size = int(base), int(size)
                off, n = r["offset"], r["size"]
                room = size - (int(ptr) - base)
                if n < need:
                    raise RingError(f"{what} holds {n} bytes; this session needs {need}")
                if off > room or n > room - off:  # written so that nothing overflows
                    raise RingError(f"{what} (offset {off}, size {n}) runs past its allocation of {room} bytes")
                return _view(int(ptr) + off, need, device)

            inputs = [region(r, input_bytes, f"input slot {i}") for i, r in enumerate(desc["inputs"])]
            outputs = [region(r, output_bytes, f"output slot {i}") for i, r in enumerate(desc["outputs"])]
            for k in ("ready", "released", "done"):
                events[k] = [_check(rt.cudaIpcOpenEventHandle(_handle_from(rt.cudaIpcEventHandle_t, h)),
                                    "cudaIpcOpenEventHandle") for h in desc["sync"][k]]
        except Exception:
            for h in opened:
                _close_mem(h, rt)
            raise
        return cls(device, opened, inputs, outputs, events, desc["slots"])

    def input(self, slot: int) -> torch.Tensor:
        return self._inputs[slot]

    def output(self, slot: int) -> torch.Tensor:
        return self._outputs[slot]

    def is_ready(self, slot: int, seq: int) -> bool:
        """Order this process's stream after the engine's writes (the engine recorded `ready`
        before sending the frame). No host wait: when the event has already completed, which is
        the usual case by the time the message has crossed the socket, a non-blocking query says
        so and the stream needs no wait on another process's event at all; otherwise the stream
        waits for it on the device."""
        rt = self._rt
        ready = self.events["ready"][slot]
        err = rt.cudaEventQuery(ready)[0]
        if err == rt.cudaError_t.cudaSuccess:
            return True
        if err != rt.cudaError_t.cudaErrorNotReady:
            raise RingError(f"cudaEventQuery failed: {err}")
        _check((rt.cudaStreamWaitEvent(self._current_stream(), ready, 0)[0], None), "cudaStreamWaitEvent")
        return True

    def mark_released(self, slot: int, seq: int) -> None:
        _check((self._rt.cudaEventRecord(self.events["released"][slot], self._current_stream())[0], None),
               "cudaEventRecord")

    def mark_done(self, slot: int, seq: int) -> None:
        _check((self._rt.cudaEventRecord(self.events["done"][slot], self._current_stream())[0], None),
               "cudaEventRecord")

    def close(self) -> bool:
        rt, _ = _rt()
        torch.cuda.synchronize(self.device)  # nothing queued may still use the memory
        self._inputs, self._outputs = [], []
        for evs in self.events.values():
            for e in evs:
                rt.cudaEventDestroy(e)
        self.events = {}
        for h in self._opened_handles:
            _close_mem(h, rt)
        self._opened_handles = []
        return True


def _open_mem(raw: bytes, rt) -> int:
    with _lock:
        entry = _opened.get(raw)
        if entry is None:
            handle = _handle_from(rt.cudaIpcMemHandle_t, raw)
            ptr = _check(rt.cudaIpcOpenMemHandle(handle, rt.cudaIpcMemLazyEnablePeerAccess), "cudaIpcOpenMemHandle")
            entry = _opened[raw] = [int(ptr), 0]
        entry[1] += 1
        return entry[0]


def _close_mem(raw: bytes, rt) -> None:
    with _lock:
        entry = _opened.get(raw)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            rt.cudaIpcCloseMemHandle(entry[0])
            del _opened[raw]


def open_allocations() -> int:
    """How many IPC allocations this process has open (for leak checks)."""
    with _lock:
        return len(_opened)
