"""Frame transport between an engine and the service: rings of frame slots in shared memory.

A ring has N >= 3 input slots (the engine's G-buffers, in its own layout) and N output slots (the
stylized frame), allocated and owned by the engine, plus three signals per slot:
- ready: the engine finished writing frame `seq` into input slot s;
- released: the service no longer reads input slot s for frame `seq` (the engine may overwrite it);
- done: the service finished writing frame `seq` into output slot s.
Backends: `shm` (POSIX shared memory, CPU tensors, signals as counters) and `cuda-ipc` (device
memory exported as legacy CUDA IPC handles, signals as interprocess CUDA events). The engine side
creates a ring and describes it for the protocol; the service side imports that description.

The package is also the engine contract, torch-free: `limits` (every limit), `errors` (the error
codes and the contract's typed errors), `layout` (the G-buffer layout as data), `protocol` (typed
messages), `client` (the engine-side Python client). It knows nothing of the model; torch is
imported only by a CUDA ring and by the service side of an `shm` ring.
"""

from .errors import RingError

__all__ = ["RingError", "create_ring", "import_ring"]


def create_ring(backend: str, slots: int, input_bytes: int, output_bytes: int, device: int = 0):
    """The engine side: allocate a ring. `device` is the CUDA device for cuda-ipc."""
    if backend == "shm":
        from .shm import ShmRing

        return ShmRing.create(slots, input_bytes, output_bytes)
    if backend == "cuda-ipc":
        from .cuda_ipc import CudaIpcRing

        return CudaIpcRing.create(slots, input_bytes, output_bytes, device)
    raise RingError(f"unknown ring backend {backend!r}; known: shm, cuda-ipc")


def import_ring(description: dict, input_bytes: int, output_bytes: int):
    """The service side: open a ring an engine described (see `interop.protocol`), checking that
    every region holds at least `input_bytes` / `output_bytes` and lies inside its allocation."""
    backend = description["backend"]
    if backend == "shm":
        from .shm import ImportedShmRing

        return ImportedShmRing.open(description, input_bytes, output_bytes)
    if backend == "cuda-ipc":
        from .cuda_ipc import ImportedCudaIpcRing

        return ImportedCudaIpcRing.open(description, input_bytes, output_bytes)
    raise RingError(f"unknown ring backend {backend!r}")
