/* cuda_ext_api.h: the CUDA driver API entry points and descriptors the bridge's CUDA half uses,
 * declared here so the bridge builds without CUDA headers and loads without a driver (libcuda.so.1
 * is opened with dlopen on the first ssvk_cuda_open). cuda_ext_check.c compares every declaration,
 * struct size and field offset with the real cuda.h when the headers are present, so a mismatch
 * fails the build. */
#ifndef SSVK_CUDA_EXT_API_H
#define SSVK_CUDA_EXT_API_H

#include <stddef.h>

#ifdef SSVK_CUDA_REAL_TYPES /* cuda_ext_check.c: the same names bound to cuda.h's own types */
typedef CUresult sx_CUresult;
typedef CUdevice sx_CUdevice;
typedef CUcontext sx_CUcontext;
typedef CUstream sx_CUstream;
typedef CUdeviceptr sx_CUdeviceptr;
typedef CUexternalMemory sx_CUexternalMemory;
typedef CUexternalSemaphore sx_CUexternalSemaphore;
typedef CUDA_EXTERNAL_MEMORY_HANDLE_DESC sx_MEM_HANDLE_DESC;
typedef CUDA_EXTERNAL_MEMORY_BUFFER_DESC sx_MEM_BUFFER_DESC;
typedef CUDA_EXTERNAL_SEMAPHORE_HANDLE_DESC sx_SEM_HANDLE_DESC;
typedef CUDA_EXTERNAL_SEMAPHORE_SIGNAL_PARAMS sx_SEM_SIGNAL_PARAMS;
typedef CUDA_EXTERNAL_SEMAPHORE_WAIT_PARAMS sx_SEM_WAIT_PARAMS;
typedef CUDA_MEMCPY2D sx_MEMCPY2D;
#else
typedef int sx_CUresult;
typedef int sx_CUdevice;
typedef struct sx_CUctx_st *sx_CUcontext;
typedef struct sx_CUstream_st *sx_CUstream;
typedef unsigned long long sx_CUdeviceptr;
typedef struct sx_CUextMemory_st *sx_CUexternalMemory;
typedef struct sx_CUextSemaphore_st *sx_CUexternalSemaphore;
typedef struct {
    int type; /* CUexternalMemoryHandleType */
    union { int fd; struct { void *handle; const void *name; } win32; const void *nvSciBufObject; } handle;
    unsigned long long size;
    unsigned int flags;
    unsigned int reserved[16];
} sx_MEM_HANDLE_DESC;
typedef struct {
    unsigned long long offset, size;
    unsigned int flags;
    unsigned int reserved[16];
} sx_MEM_BUFFER_DESC;
typedef struct {
    int type; /* CUexternalSemaphoreHandleType */
    union { int fd; struct { void *handle; const void *name; } win32; const void *nvSciSyncObj; } handle;
    unsigned int flags;
    unsigned int reserved[16];
} sx_SEM_HANDLE_DESC;
typedef struct {
    struct {
        struct { unsigned long long value; } fence;
        union { void *fence; unsigned long long reserved; } nvSciSync;
        struct { unsigned long long key; } keyedMutex;
        unsigned int reserved[12];
    } params;
    unsigned int flags;
    unsigned int reserved[16];
} sx_SEM_SIGNAL_PARAMS;
typedef struct {
    struct {
        struct { unsigned long long value; } fence;
        union { void *fence; unsigned long long reserved; } nvSciSync;
        struct { unsigned long long key; unsigned int timeoutMs; } keyedMutex;
        unsigned int reserved[10];
    } params;
    unsigned int flags;
    unsigned int reserved[16];
} sx_SEM_WAIT_PARAMS;
typedef struct {
    size_t srcXInBytes, srcY;
    int srcMemoryType; /* CUmemorytype */
    const void *srcHost;
    sx_CUdeviceptr srcDevice;
    void *srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    sx_CUdeviceptr dstDevice;
    void *dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
} sx_MEMCPY2D;
#endif

#define SX_CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD 1
#define SX_CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_TIMELINE_SEMAPHORE_FD 9
#define SX_CUDA_EXTERNAL_MEMORY_DEDICATED 0x1
#define SX_CU_MEMORYTYPE_DEVICE 2
#define SX_CU_STREAM_NON_BLOCKING 0x1

/* name in libcuda, return type, parameter list */
#define SSVK_CUDA_FUNCTIONS(X) \
    X(cuInit, sx_CUresult, (unsigned int)) \
    X(cuDeviceGet, sx_CUresult, (sx_CUdevice *, int)) \
    X(cuDevicePrimaryCtxRetain, sx_CUresult, (sx_CUcontext *, sx_CUdevice)) \
    X(cuDevicePrimaryCtxRelease_v2, sx_CUresult, (sx_CUdevice)) \
    X(cuCtxGetCurrent, sx_CUresult, (sx_CUcontext *)) \
    X(cuCtxGetDevice, sx_CUresult, (sx_CUdevice *)) \
    X(cuCtxPushCurrent_v2, sx_CUresult, (sx_CUcontext)) \
    X(cuCtxPopCurrent_v2, sx_CUresult, (sx_CUcontext *)) \
    X(cuCtxSynchronize, sx_CUresult, (void)) \
    X(cuImportExternalMemory, sx_CUresult, (sx_CUexternalMemory *, const sx_MEM_HANDLE_DESC *)) \
    X(cuExternalMemoryGetMappedBuffer, sx_CUresult, (sx_CUdeviceptr *, sx_CUexternalMemory, const sx_MEM_BUFFER_DESC *)) \
    X(cuDestroyExternalMemory, sx_CUresult, (sx_CUexternalMemory)) \
    X(cuImportExternalSemaphore, sx_CUresult, (sx_CUexternalSemaphore *, const sx_SEM_HANDLE_DESC *)) \
    X(cuDestroyExternalSemaphore, sx_CUresult, (sx_CUexternalSemaphore)) \
    X(cuWaitExternalSemaphoresAsync, sx_CUresult, \
      (const sx_CUexternalSemaphore *, const sx_SEM_WAIT_PARAMS *, unsigned int, sx_CUstream)) \
    X(cuSignalExternalSemaphoresAsync, sx_CUresult, \
      (const sx_CUexternalSemaphore *, const sx_SEM_SIGNAL_PARAMS *, unsigned int, sx_CUstream)) \
    X(cuMemcpy2DAsync_v2, sx_CUresult, (const sx_MEMCPY2D *, sx_CUstream)) \
    X(cuMemcpyDtoDAsync_v2, sx_CUresult, (sx_CUdeviceptr, sx_CUdeviceptr, size_t, sx_CUstream)) \
    X(cuMemFree_v2, sx_CUresult, (sx_CUdeviceptr)) \
    X(cuStreamCreate, sx_CUresult, (sx_CUstream *, unsigned int)) \
    X(cuStreamDestroy_v2, sx_CUresult, (sx_CUstream)) \
    X(cuGetErrorName, sx_CUresult, (sx_CUresult, const char **))

#endif
