/* cuda_bridge.c: the CUDA half of the bridge (ssvk.h): the driver opened with dlopen, the bridge's two
 * buffers imported as external memory and mapped as device pointers, its four timeline semaphores
 * imported as external semaphores, and the stream-ordered copies between them and the ring.
 *
 * Invariants: every call runs in the context the import was made in (the engine's, or the device's
 * primary one), pushed and popped around it, as libstreamstyle's cuda-ipc ring does; on the frame
 * path only stream-ordered calls are made (semaphore wait and signal, async copies): the host never
 * waits on the GPU. A fd handed to CUDA is owned by CUDA once the import succeeded and closed here
 * when it failed. */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge.h"
#include "cuda_ext_api.h"
#include "cuda_loader.h"

SS_CUDA_LOADER(SSVK_CUDA_FUNCTIONS)

struct ssvk_cuda {
    ssvk_bridge *bridge;
    sx_CUdevice dev;
    sx_CUcontext ctx;
    int primary;
    sx_CUexternalMemory mem[2];     /* input, output */
    sx_CUdeviceptr ptr[2];
    sx_CUexternalSemaphore sem[SSVK_SEMAPHORES]; /* indexed by ssvk_semaphore */
    sx_CUstream stream;             /* ssvk_cuda_stream */
};

static ss_status failed(sx_CUresult rc, const char *what) {
    const char *name = NULL;
    if (cu.cuGetErrorName) cu.cuGetErrorName(rc, &name);
    ssvk_set_error("%s failed: %s (%d)", what, name ? name : "?", (int)rc);
    return SS_CUDA_FAILED;
}

#define CU(call, what)                                       \
    do {                                                     \
        sx_CUresult rc_ = (call);                            \
        if (rc_ != 0) { st = failed(rc_, what); goto out; }  \
    } while (0)

static ss_status import_memory(ssvk_cuda *c, int which) {
    ss_status st = SS_OK;
    ssvk_info *info = &c->bridge->info;
    sx_MEM_HANDLE_DESC md;
    sx_MEM_BUFFER_DESC bd;
    int fd;
    if (ssvk_export_memory(c->bridge, which, &fd) != VK_SUCCESS) return SS_SYSTEM_FAILED;
    memset(&md, 0, sizeof md);
    md.type = SX_CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD;
    md.handle.fd = fd;
    md.size = which ? info->output_bytes : info->input_bytes;
    md.flags = SX_CUDA_EXTERNAL_MEMORY_DEDICATED; /* the bridge's allocations are dedicated */
    {
        sx_CUresult rc = cu.cuImportExternalMemory(&c->mem[which], &md);
        if (rc != 0) {
            close(fd);
            return failed(rc, "cuImportExternalMemory");
        }
    }
    memset(&bd, 0, sizeof bd);
    bd.size = md.size;
    CU(cu.cuExternalMemoryGetMappedBuffer(&c->ptr[which], c->mem[which], &bd), "cuExternalMemoryGetMappedBuffer");
out:
    return st;
}

static ss_status import_semaphore(ssvk_cuda *c, int which) {
    sx_SEM_HANDLE_DESC sd;
    int fd;
    sx_CUresult rc;
    if (ssvk_export_semaphore(c->bridge, (ssvk_semaphore)which, &fd) != VK_SUCCESS) return SS_SYSTEM_FAILED;
    memset(&sd, 0, sizeof sd);
    sd.type = SX_CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_TIMELINE_SEMAPHORE_FD;
    sd.handle.fd = fd;
    if ((rc = cu.cuImportExternalSemaphore(&c->sem[which], &sd)) != 0) {
        close(fd);
        return failed(rc, "cuImportExternalSemaphore");
    }
    return SS_OK;
}

static void release(ssvk_cuda *c) {
    sx_CUcontext prev;
    if (c->ctx && cu.cuCtxPushCurrent_v2(c->ctx) == 0) {
        cu.cuCtxSynchronize(); /* nothing queued may still use what is freed */
        for (int i = 0; i < 2; i++) {
            if (c->ptr[i]) cu.cuMemFree_v2(c->ptr[i]); /* a mapped buffer is freed with cuMemFree */
            if (c->mem[i]) cu.cuDestroyExternalMemory(c->mem[i]);
        }
        for (int i = 0; i < SSVK_SEMAPHORES; i++)
            if (c->sem[i]) cu.cuDestroyExternalSemaphore(c->sem[i]);
        if (c->stream) cu.cuStreamDestroy_v2(c->stream);
        cu.cuCtxPopCurrent_v2(&prev);
    }
    if (c->primary) cu.cuDevicePrimaryCtxRelease_v2(c->dev);
    free(c);
}

ss_status ssvk_cuda_open(ssvk_bridge *bridge, int32_t device, ssvk_cuda **out) {
    ss_status st = SS_OK;
    ssvk_cuda *c;
    sx_CUcontext prev;
    int pushed = 0;
    if (!bridge || !out) {
        ssvk_set_error("ssvk_cuda_open: a NULL");
        return SS_INVALID_ARGUMENT;
    }
    if (!bridge->info.semaphores_exportable) {
        ssvk_set_error("the bridge's semaphores are not exportable: create it with require_semaphore_export");
        return SS_INVALID_ARGUMENT;
    }
    pthread_once(&cu_once, cu_load);
    if (cu.state != 1) {
        ssvk_set_error("the bridge's CUDA half needs the CUDA driver: %s", cu.why);
        return SS_NO_CUDA;
    }
    if (!(c = calloc(1, sizeof *c))) return SS_OUT_OF_MEMORY;
    c->bridge = bridge;
    CU(cu.cuCtxGetCurrent(&c->ctx), "cuCtxGetCurrent");
    if (c->ctx) {
        CU(cu.cuCtxGetDevice(&c->dev), "cuCtxGetDevice");
        if (c->dev != device) {
            ssvk_set_error("the current CUDA context is on device %d; the bridge asks for %d", (int)c->dev, (int)device);
            st = SS_INVALID_ARGUMENT;
            goto out;
        }
    } else {
        CU(cu.cuDeviceGet(&c->dev, device), "cuDeviceGet");
        CU(cu.cuDevicePrimaryCtxRetain(&c->ctx, c->dev), "cuDevicePrimaryCtxRetain");
        c->primary = 1;
    }
    CU(cu.cuCtxPushCurrent_v2(c->ctx), "cuCtxPushCurrent");
    pushed = 1;
    for (int i = 0; i < 2 && st == SS_OK; i++) st = import_memory(c, i);
    for (int i = 0; i < SSVK_SEMAPHORES && st == SS_OK; i++) st = import_semaphore(c, i);
    if (st == SS_OK) CU(cu.cuStreamCreate(&c->stream, SX_CU_STREAM_NON_BLOCKING), "cuStreamCreate");
out:
    if (pushed) cu.cuCtxPopCurrent_v2(&prev);
    if (st != SS_OK) {
        release(c);
        return st;
    }
    *out = c;
    return SS_OK;
}

void ssvk_cuda_close(ssvk_cuda *c) {
    if (c) release(c);
}

ss_status ssvk_cuda_pointers(ssvk_cuda *c, uint64_t *input, uint64_t *output) {
    if (!c) return SS_INVALID_ARGUMENT;
    if (input) *input = c->ptr[0];
    if (output) *output = c->ptr[1];
    return SS_OK;
}

void *ssvk_cuda_stream(ssvk_cuda *c) { return c ? (void *)c->stream : NULL; }

ss_status ssvk_cuda_copy_in(ssvk_cuda *c, void *stream, uint64_t n, uint64_t slot) {
    ss_status st = SS_OK;
    sx_CUcontext prev;
    sx_SEM_WAIT_PARAMS wp;
    sx_SEM_SIGNAL_PARAMS sp;
    const ssvk_info *info;
    if (!c || !slot) {
        ssvk_set_error("ssvk_cuda_copy_in: a NULL");
        return SS_INVALID_ARGUMENT;
    }
    info = &c->bridge->info;
    CU(cu.cuCtxPushCurrent_v2(c->ctx), "cuCtxPushCurrent");
    memset(&wp, 0, sizeof wp);
    wp.params.fence.value = n;
    memset(&sp, 0, sizeof sp);
    sp.params.fence.value = n;
    {
        sx_CUresult rc = cu.cuWaitExternalSemaphoresAsync(&c->sem[SSVK_RENDERED], &wp, 1, (sx_CUstream)stream);
        if (rc == 0 && info->span_bytes) /* every mirrored plane, and the padding between them, at once */
            rc = cu.cuMemcpyDtoDAsync_v2(slot + info->span_offset, c->ptr[0] + info->span_offset,
                                         (size_t)info->span_bytes, (sx_CUstream)stream);
        for (uint32_t i = 0; rc == 0 && i < info->plane_count; i++) { /* after the span: it may cover their slots */
            const ssvk_plane *p = &info->planes[i];
            sx_MEMCPY2D m;
            if (p->mirrored) continue;
            memset(&m, 0, sizeof m);
            m.srcMemoryType = m.dstMemoryType = SX_CU_MEMORYTYPE_DEVICE;
            m.srcDevice = c->ptr[0] + p->offset;
            m.srcPitch = p->row_pitch;
            m.dstDevice = slot + p->slot_offset;
            m.dstPitch = p->slot_pitch;
            m.WidthInBytes = (size_t)c->bridge->width * p->format->pixel_bytes;
            m.Height = c->bridge->height;
            rc = cu.cuMemcpy2DAsync_v2(&m, (sx_CUstream)stream);
        }
        if (rc == 0) rc = cu.cuSignalExternalSemaphoresAsync(&c->sem[SSVK_CONSUMED], &sp, 1, (sx_CUstream)stream);
        cu.cuCtxPopCurrent_v2(&prev);
        if (rc != 0)
            return failed(rc, "cuWaitExternalSemaphoresAsync/cuMemcpyDtoDAsync/cuMemcpy2DAsync/cuSignalExternalSemaphoresAsync");
    }
out:
    return st;
}

ss_status ssvk_cuda_copy_out(ssvk_cuda *c, void *stream, uint64_t m, uint64_t output) {
    ss_status st = SS_OK;
    sx_CUcontext prev;
    sx_SEM_WAIT_PARAMS wp;
    sx_SEM_SIGNAL_PARAMS sp;
    if (!c || !output) {
        ssvk_set_error("ssvk_cuda_copy_out: a NULL");
        return SS_INVALID_ARGUMENT;
    }
    CU(cu.cuCtxPushCurrent_v2(c->ctx), "cuCtxPushCurrent");
    memset(&sp, 0, sizeof sp);
    sp.params.fence.value = m;
    memset(&wp, 0, sizeof wp);
    wp.params.fence.value = m ? m - 1 : 0;
    {
        sx_CUresult rc = cu.cuWaitExternalSemaphoresAsync(&c->sem[SSVK_COMPOSITED], &wp, 1, (sx_CUstream)stream);
        if (rc == 0) rc = cu.cuMemcpyDtoDAsync_v2(c->ptr[1], output, (size_t)c->bridge->info.output_frame_bytes,
                                                 (sx_CUstream)stream);
        if (rc == 0) rc = cu.cuSignalExternalSemaphoresAsync(&c->sem[SSVK_STYLIZED], &sp, 1, (sx_CUstream)stream);
        cu.cuCtxPopCurrent_v2(&prev);
        if (rc != 0) return failed(rc, "cuWaitExternalSemaphoresAsync/cuMemcpyDtoDAsync/cuSignalExternalSemaphoresAsync");
    }
out:
    return st;
}
