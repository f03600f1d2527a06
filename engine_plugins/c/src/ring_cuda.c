/* ring_cuda.c: the `cuda-ipc` backend, as interop/cuda_ipc.py's CudaIpcRing makes it: one device
 * allocation (cuMemAlloc, which is what cudaMalloc uses, so legacy IPC can export it) holding every
 * input slot and then every output slot on 512-byte boundaries, one IPC memory handle for it, and
 * one interprocess event per slot and signal (ready, released, done; timing disabled).
 *
 * The driver is opened with dlopen on first use, so the library loads on machines without CUDA.
 * Every call runs in the context that was current on the thread that opened the session (an engine
 * on the driver API with its own context), or else in the device's primary context (the one the CUDA
 * runtime uses, so an engine's cudaStream_t works here as a CUstream), pushed and popped around the
 * call. Streams passed in must belong to that context. On the frame path only
 * stream-ordered calls are made (event record, stream wait): the host never waits on the GPU. */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_api.h"
#include "cuda_loader.h"
#include "ring.h"

#define SS_CUDA_ALIGN 512

SS_CUDA_LOADER(SS_CUDA_FUNCTIONS)

typedef struct cuda_impl {
    ss_CUdevice dev;
    ss_CUcontext ctx;
    int primary;                /* ctx is the device's primary context, retained by us */
    ss_CUdeviceptr base;
    ss_CUevent events[3][SS_MAX_SLOTS]; /* ready, released, done */
    unsigned char mem_handle[64];
    unsigned char event_handles[3][SS_MAX_SLOTS * 64];
} cuda_impl;

enum { READY = 0, RELEASED = 1, DONE = 2 };

static ss_status failed(ss_CUresult rc, const char *what) {
    const char *name = NULL;
    if (cu.cuGetErrorName) cu.cuGetErrorName(rc, &name);
    ss_set_error("cuda", "%s failed: %s (%d)", what, name ? name : "?", (int)rc);
    return SS_CUDA_FAILED;
}

#define CU(call, what)                        \
    do {                                      \
        ss_CUresult rc_ = (call);             \
        if (rc_ != 0) { st = failed(rc_, what); goto out; } \
    } while (0)

/* The frame path's two calls, in the ring's context. When the caller's thread already has it
 * current (an engine's render thread usually does) the push and pop are skipped: two driver calls
 * fewer on every ss_acquire, ss_submit and ss_output. */
static ss_status in_ctx(cuda_impl *c, int record, ss_CUevent ev, void *stream) {
    ss_CUcontext cur = NULL, prev;
    ss_CUresult rc;
    const char *what = record ? "cuEventRecord" : "cuStreamWaitEvent";
    int push = cu.cuCtxGetCurrent(&cur) != 0 || cur != c->ctx;
    if (push && (rc = cu.cuCtxPushCurrent_v2(c->ctx)) != 0) return failed(rc, "cuCtxPushCurrent");
    if (record) {
        rc = cu.cuEventRecord(ev, (ss_CUstream)stream);
    } else {
        /* A wait is for a service signal that has almost always completed by the time its answer
         * came (the service answers after the device is done): a host query says so without
         * queueing a wait into the engine's stream, and a signal not yet complete is waited for
         * on the device, never here. Measured on the H200: benchmarks/NOTES.md v0.11. */
        rc = cu.cuEventQuery(ev);
        if (rc == SS_CUDA_ERROR_NOT_READY) rc = cu.cuStreamWaitEvent((ss_CUstream)stream, ev, 0);
        else if (rc != 0) what = "cuEventQuery";
    }
    if (push) cu.cuCtxPopCurrent_v2(&prev);
    return rc == 0 ? SS_OK : failed(rc, what);
}

static ss_status with_ctx_record(cuda_impl *c, ss_CUevent ev, void *stream) { return in_ctx(c, 1, ev, stream); }
static ss_status with_ctx_wait(cuda_impl *c, ss_CUevent ev, void *stream) { return in_ctx(c, 0, ev, stream); }

static ss_status cuda_mark_ready(ss_ring *r, uint32_t slot, uint64_t seq, void *stream) {
    cuda_impl *c = r->impl;
    (void)seq;
    return with_ctx_record(c, c->events[READY][slot], stream);
}

static int cuda_is_released(ss_ring *r, uint32_t slot, uint64_t seq) {
    (void)r; (void)slot;
    return seq == 0; /* unknown on the host without a sync: the client relies on the frame's answer */
}

static ss_status cuda_wait_released(ss_ring *r, uint32_t slot, void *stream) {
    cuda_impl *c = r->impl;
    return with_ctx_wait(c, c->events[RELEASED][slot], stream);
}

static ss_status cuda_wait_done(ss_ring *r, uint32_t slot, void *stream) {
    cuda_impl *c = r->impl;
    return with_ctx_wait(c, c->events[DONE][slot], stream);
}

static void cuda_free(cuda_impl *c, uint32_t slots) {
    ss_CUcontext prev;
    if (cu.cuCtxPushCurrent_v2(c->ctx) == 0) {
        cu.cuCtxSynchronize(); /* nothing queued may still use the memory or the events */
        for (int k = 0; k < 3; k++)
            for (uint32_t i = 0; i < slots; i++)
                if (c->events[k][i]) cu.cuEventDestroy_v2(c->events[k][i]);
        if (c->base) cu.cuMemFree_v2(c->base);
        cu.cuCtxPopCurrent_v2(&prev);
    }
    if (c->primary) cu.cuDevicePrimaryCtxRelease_v2(c->dev);
    free(c);
}

static void cuda_close(ss_ring *r) {
    cuda_free(r->impl, r->desc.slots);
    free(r);
}

static const ss_ring_ops CUDA_OPS = {cuda_mark_ready, cuda_is_released, cuda_wait_released, cuda_wait_done,
                                     cuda_close};

static uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

ss_status ss_ring_create_cuda(uint32_t slots, uint64_t input_bytes, uint64_t output_bytes, int32_t device,
                              ss_ring **out) {
    ss_status st = SS_OK;
    ss_CUcontext prev;
    int pushed = 0, retained = 0;
    uint64_t in_step = align_up(input_bytes, SS_CUDA_ALIGN), out_step = align_up(output_bytes, SS_CUDA_ALIGN);
    uint64_t total = slots * (in_step + out_step);
    cuda_impl *c;
    ss_ring *r;
    pthread_once(&cu_once, cu_load);
    if (cu.state != 1) {
        ss_set_error("no_cuda", "the cuda-ipc backend needs the CUDA driver: %s", cu.why);
        return SS_NO_CUDA;
    }
    c = calloc(1, sizeof *c);
    r = calloc(1, sizeof *r);
    if (!c || !r) { free(c); free(r); ss_set_error("memory", "out of memory"); return SS_OUT_OF_MEMORY; }
    CU(cu.cuCtxGetCurrent(&c->ctx), "cuCtxGetCurrent");
    if (c->ctx) { /* the engine's own context */
        CU(cu.cuCtxGetDevice(&c->dev), "cuCtxGetDevice");
        if (c->dev != device) {
            ss_set_error("argument", "the current CUDA context is on device %d; the session asks for %d", (int)c->dev,
                         (int)device);
            st = SS_INVALID_ARGUMENT;
            goto out;
        }
    } else {
        CU(cu.cuDeviceGet(&c->dev, device), "cuDeviceGet");
        CU(cu.cuDevicePrimaryCtxRetain(&c->ctx, c->dev), "cuDevicePrimaryCtxRetain");
        c->primary = 1;
    }
    retained = 1;
    CU(cu.cuCtxPushCurrent_v2(c->ctx), "cuCtxPushCurrent");
    pushed = 1;
    CU(cu.cuMemAlloc_v2(&c->base, (size_t)total), "cuMemAlloc");
    CU(cu.cuMemsetD8_v2(c->base, 0, (size_t)total), "cuMemsetD8");
    CU(cu.cuIpcGetMemHandle((ss_CUipcMemHandle *)(void *)c->mem_handle, c->base), "cuIpcGetMemHandle");
    for (int k = 0; k < 3; k++)
        for (uint32_t i = 0; i < slots; i++) {
            CU(cu.cuEventCreate(&c->events[k][i], SS_CU_EVENT_DISABLE_TIMING | SS_CU_EVENT_INTERPROCESS),
               "cuEventCreate");
            CU(cu.cuIpcGetEventHandle((ss_CUipcEventHandle *)(void *)(c->event_handles[k] + 64 * i),
                                      c->events[k][i]),
               "cuIpcGetEventHandle");
        }
    CU(cu.cuCtxSynchronize(), "cuCtxSynchronize"); /* the zeroed ring is visible before anyone opens it */
out:
    if (pushed) cu.cuCtxPopCurrent_v2(&prev);
    if (st != SS_OK) {
        if (retained) cuda_free(c, slots);
        else free(c);
        free(r);
        return st;
    }
    r->ops = &CUDA_OPS;
    r->impl = c;
    r->desc.backend = SS_BACKEND_CUDA_IPC;
    r->desc.slots = slots;
    r->desc.device = device;
    r->desc.mem_handle = c->mem_handle;
    for (int k = 0; k < 3; k++) r->desc.event_handles[k] = c->event_handles[k];
    r->desc.input_bytes = input_bytes;
    r->desc.output_bytes = output_bytes;
    for (uint32_t i = 0; i < slots; i++) {
        r->desc.input_offsets[i] = i * in_step;
        r->desc.output_offsets[i] = slots * in_step + i * out_step;
        r->inputs[i] = (void *)(uintptr_t)(c->base + r->desc.input_offsets[i]);
        r->outputs[i] = (void *)(uintptr_t)(c->base + r->desc.output_offsets[i]);
    }
    *out = r;
    return SS_OK;
}
