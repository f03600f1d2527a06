/* cuda_api.h: the few CUDA driver API entry points the cuda-ipc ring uses, declared here so that
 * libstreamstyle builds without CUDA headers and loads without a driver (libcuda.so.1 is opened with
 * dlopen the first time a cuda-ipc ring is made). cuda_check.c compares every declaration with the
 * real cuda.h when the headers are present, so a mismatch fails the build. */
#ifndef SS_CUDA_API_H
#define SS_CUDA_API_H

#include <stddef.h>

#ifdef SS_CUDA_REAL_TYPES /* cuda_check.c: the same names bound to cuda.h's own types */
typedef CUresult ss_CUresult;
typedef CUdevice ss_CUdevice;
typedef CUcontext ss_CUcontext;
typedef CUevent ss_CUevent;
typedef CUstream ss_CUstream;
typedef CUdeviceptr ss_CUdeviceptr;
typedef CUipcMemHandle ss_CUipcMemHandle;
typedef CUipcEventHandle ss_CUipcEventHandle;
#else
typedef int ss_CUresult;                      /* CUresult; 0 is CUDA_SUCCESS */
typedef int ss_CUdevice;
typedef struct ss_CUctx_st *ss_CUcontext;
typedef struct ss_CUevent_st *ss_CUevent;
typedef struct ss_CUstream_st *ss_CUstream;   /* the same handle as a cudaStream_t */
typedef unsigned long long ss_CUdeviceptr;
typedef struct { char reserved[64]; } ss_CUipcMemHandle;
typedef struct { char reserved[64]; } ss_CUipcEventHandle;
#endif

#define SS_CU_EVENT_DISABLE_TIMING 0x2
#define SS_CU_EVENT_INTERPROCESS 0x4
#define SS_CUDA_ERROR_NOT_READY 600 /* cuEventQuery: the event has not completed */

/* name in libcuda, return type, parameter list */
#define SS_CUDA_FUNCTIONS(X) \
    X(cuInit, ss_CUresult, (unsigned int)) \
    X(cuDeviceGet, ss_CUresult, (ss_CUdevice *, int)) \
    X(cuDevicePrimaryCtxRetain, ss_CUresult, (ss_CUcontext *, ss_CUdevice)) \
    X(cuDevicePrimaryCtxRelease_v2, ss_CUresult, (ss_CUdevice)) \
    X(cuCtxPushCurrent_v2, ss_CUresult, (ss_CUcontext)) \
    X(cuCtxPopCurrent_v2, ss_CUresult, (ss_CUcontext *)) \
    X(cuCtxSynchronize, ss_CUresult, (void)) \
    X(cuCtxGetCurrent, ss_CUresult, (ss_CUcontext *)) \
    X(cuCtxGetDevice, ss_CUresult, (ss_CUdevice *)) \
    X(cuMemAlloc_v2, ss_CUresult, (ss_CUdeviceptr *, size_t)) \
    X(cuMemFree_v2, ss_CUresult, (ss_CUdeviceptr)) \
    X(cuMemsetD8_v2, ss_CUresult, (ss_CUdeviceptr, unsigned char, size_t)) \
    X(cuIpcGetMemHandle, ss_CUresult, (ss_CUipcMemHandle *, ss_CUdeviceptr)) \
    X(cuEventCreate, ss_CUresult, (ss_CUevent *, unsigned int)) \
    X(cuEventDestroy_v2, ss_CUresult, (ss_CUevent)) \
    X(cuIpcGetEventHandle, ss_CUresult, (ss_CUipcEventHandle *, ss_CUevent)) \
    X(cuEventRecord, ss_CUresult, (ss_CUevent, ss_CUstream)) \
    X(cuStreamWaitEvent, ss_CUresult, (ss_CUstream, ss_CUevent, unsigned int)) \
    X(cuEventQuery, ss_CUresult, (ss_CUevent)) \
    X(cuGetErrorName, ss_CUresult, (ss_CUresult, const char **))

#endif
