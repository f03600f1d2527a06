/* fake_cuda.c: a stand-in libcuda.so.1 for testing the bridge's CUDA half on a machine without a GPU
 * (tests/test_vulkan_bridge.py). "Device pointers" are host addresses: external memory is the fd
 * mapped with mmap, copies are memcpy, a timeline semaphore is a counter. It checks what the real
 * driver would refuse (handle types, the dedicated flag, sizes, memory types, non-increasing signals)
 * and records a wait whose value was not reached (the real driver would block the stream there),
 * the context push depth, retains, frees, destroys, copies and live streams, which fake_cuda_state()
 * reports. */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cuda_ext_api.h"

#define API __attribute__((visibility("default")))
enum { BAD = 1 };

static struct { int depth, retains, frees, mem_destroyed, sem_destroyed, unmet, misuse, copies_1d, copies_2d; } st;
static struct mem { void *p; size_t n; } mems[8];
static unsigned long long sems[8];
static int nmem, nsem;

static int fake_streams; /* alive */
API void fake_cuda_state(int out[10]) {
    out[0] = st.depth; out[1] = st.retains; out[2] = st.frees; out[3] = st.mem_destroyed;
    out[4] = st.sem_destroyed; out[5] = st.unmet; out[6] = st.misuse; out[7] = st.copies_1d; out[8] = st.copies_2d;
    out[9] = fake_streams;
}
API unsigned long long fake_cuda_semaphore(int i) { return sems[i]; }
API void fake_cuda_signal(int i, unsigned long long v) { sems[i] = v; } /* what Vulkan's signal does */

API sx_CUresult cuInit(unsigned int f) { (void)f; return 0; }
API sx_CUresult cuDeviceGet(sx_CUdevice *d, int o) { *d = o; return o == 0 ? 0 : 101; }
API sx_CUresult cuDevicePrimaryCtxRetain(sx_CUcontext *c, sx_CUdevice d) { (void)d; st.retains++; *c = (sx_CUcontext)(void *)0x10; return 0; }
API sx_CUresult cuDevicePrimaryCtxRelease_v2(sx_CUdevice d) { (void)d; st.retains--; return 0; }
API sx_CUresult cuCtxGetCurrent(sx_CUcontext *c) { *c = NULL; return 0; }
API sx_CUresult cuCtxGetDevice(sx_CUdevice *d) { *d = 0; return 0; }
API sx_CUresult cuCtxPushCurrent_v2(sx_CUcontext c) { if (!c) st.misuse++; st.depth++; return 0; }
API sx_CUresult cuCtxPopCurrent_v2(sx_CUcontext *c) { *c = (sx_CUcontext)(void *)0x10; st.depth--; return 0; }
API sx_CUresult cuCtxSynchronize(void) { if (st.depth <= 0) st.misuse++; return 0; }

API sx_CUresult cuImportExternalMemory(sx_CUexternalMemory *m, const sx_MEM_HANDLE_DESC *d) {
    struct stat s;
    void *p;
    if (d->type != SX_CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD || d->flags != SX_CUDA_EXTERNAL_MEMORY_DEDICATED ||
        fstat(d->handle.fd, &s) != 0 || (unsigned long long)s.st_size < d->size || nmem == 8)
        return BAD;
    p = mmap(NULL, d->size, PROT_READ | PROT_WRITE, MAP_SHARED, d->handle.fd, 0);
    if (p == MAP_FAILED) return BAD;
    close(d->handle.fd); /* the driver owns the fd once the import succeeded */
    mems[nmem].p = p;
    mems[nmem].n = d->size;
    *m = (sx_CUexternalMemory)(void *)&mems[nmem++];
    return 0;
}
API sx_CUresult cuExternalMemoryGetMappedBuffer(sx_CUdeviceptr *p, sx_CUexternalMemory m, const sx_MEM_BUFFER_DESC *d) {
    struct mem *x = (struct mem *)(void *)m;
    if (d->offset + d->size > x->n) return BAD;
    *p = (sx_CUdeviceptr)(size_t)x->p + d->offset;
    return 0;
}
API sx_CUresult cuDestroyExternalMemory(sx_CUexternalMemory m) {
    struct mem *x = (struct mem *)(void *)m;
    munmap(x->p, x->n);
    st.mem_destroyed++;
    return 0;
}
API sx_CUresult cuMemFree_v2(sx_CUdeviceptr p) { (void)p; st.frees++; return 0; }
API sx_CUresult cuImportExternalSemaphore(sx_CUexternalSemaphore *s, const sx_SEM_HANDLE_DESC *d) {
    if (d->type != SX_CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_TIMELINE_SEMAPHORE_FD || d->handle.fd < 0 || nsem == 8) return BAD;
    close(d->handle.fd);
    *s = (sx_CUexternalSemaphore)(void *)&sems[nsem++];
    return 0;
}
API sx_CUresult cuDestroyExternalSemaphore(sx_CUexternalSemaphore s) { (void)s; st.sem_destroyed++; return 0; }
API sx_CUresult cuWaitExternalSemaphoresAsync(const sx_CUexternalSemaphore *s, const sx_SEM_WAIT_PARAMS *p,
                                              unsigned int n, sx_CUstream q) {
    (void)q;
    if (st.depth <= 0) st.misuse++;
    for (unsigned i = 0; i < n; i++)
        if (*(unsigned long long *)(void *)s[i] < p[i].params.fence.value) st.unmet++;
    return 0;
}
API sx_CUresult cuSignalExternalSemaphoresAsync(const sx_CUexternalSemaphore *s, const sx_SEM_SIGNAL_PARAMS *p,
                                                unsigned int n, sx_CUstream q) {
    (void)q;
    for (unsigned i = 0; i < n; i++) {
        unsigned long long *v = (unsigned long long *)(void *)s[i];
        if (p[i].params.fence.value <= *v) return BAD; /* a timeline only goes up */
        *v = p[i].params.fence.value;
    }
    return 0;
}
API sx_CUresult cuMemcpy2DAsync_v2(const sx_MEMCPY2D *m, sx_CUstream q) {
    (void)q;
    if (st.depth <= 0) st.misuse++;
    if (m->srcMemoryType != SX_CU_MEMORYTYPE_DEVICE || m->dstMemoryType != SX_CU_MEMORYTYPE_DEVICE ||
        m->srcPitch < m->WidthInBytes || m->dstPitch < m->WidthInBytes || m->srcXInBytes || m->dstXInBytes)
        return BAD;
    st.copies_2d++;
    for (size_t y = 0; y < m->Height; y++)
        memcpy((char *)(size_t)m->dstDevice + y * m->dstPitch, (const char *)(size_t)m->srcDevice + y * m->srcPitch,
               m->WidthInBytes);
    return 0;
}
API sx_CUresult cuMemcpyDtoDAsync_v2(sx_CUdeviceptr d, sx_CUdeviceptr s, size_t n, sx_CUstream q) {
    (void)q;
    if (st.depth <= 0) st.misuse++;
    st.copies_1d++;
    memcpy((void *)(size_t)d, (const void *)(size_t)s, n);
    return 0;
}
API sx_CUresult cuStreamCreate(sx_CUstream *q, unsigned int flags) {
    if (st.depth <= 0 || flags != 1) st.misuse++; /* non-blocking, in the bridge's context */
    *q = (sx_CUstream)(void *)&fake_streams;
    fake_streams++;
    return 0;
}
API sx_CUresult cuStreamDestroy_v2(sx_CUstream q) {
    if (q != (sx_CUstream)(void *)&fake_streams) st.misuse++;
    fake_streams--;
    return 0;
}
API sx_CUresult cuGetErrorName(sx_CUresult r, const char **s) { (void)r; *s = "CUDA_ERROR_FAKE"; return 0; }
