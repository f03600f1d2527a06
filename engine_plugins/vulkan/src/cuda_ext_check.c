/* cuda_ext_check.c: compiled only when CUDA headers are found; fails the build if cuda_ext_api.h
 * differs from the real driver API (every function's type, the descriptors' sizes and the offsets of
 * the fields the bridge sets, the constants). Defines nothing the bridge uses. */
#include <cuda.h>
#include <stddef.h>

#define SSVK_CUDA_REAL_TYPES
#include "cuda_ext_api.h"

#define SX_SAME(name, ret, args) _Static_assert(__builtin_types_compatible_p(__typeof__(&name), ret(*) args), #name);
SSVK_CUDA_FUNCTIONS(SX_SAME)

#undef SSVK_CUDA_EXT_API_H
#undef SSVK_CUDA_REAL_TYPES
#define sx_CUresult own_CUresult /* the fallback declarations, under other names, to compare layouts */
#define sx_CUdevice own_CUdevice
#define sx_CUcontext own_CUcontext
#define sx_CUstream own_CUstream
#define sx_CUdeviceptr own_CUdeviceptr
#define sx_CUexternalMemory own_CUexternalMemory
#define sx_CUexternalSemaphore own_CUexternalSemaphore
#define sx_MEM_HANDLE_DESC own_MEM_HANDLE_DESC
#define sx_MEM_BUFFER_DESC own_MEM_BUFFER_DESC
#define sx_SEM_HANDLE_DESC own_SEM_HANDLE_DESC
#define sx_SEM_SIGNAL_PARAMS own_SEM_SIGNAL_PARAMS
#define sx_SEM_WAIT_PARAMS own_SEM_WAIT_PARAMS
#define sx_MEMCPY2D own_MEMCPY2D
#undef SSVK_CUDA_FUNCTIONS
#include "cuda_ext_api.h"

#define SX_LAYOUT(own, real, field) \
    _Static_assert(offsetof(own, field) == offsetof(real, field), #real "." #field);
_Static_assert(sizeof(own_MEM_HANDLE_DESC) == sizeof(CUDA_EXTERNAL_MEMORY_HANDLE_DESC), "memory handle desc");
SX_LAYOUT(own_MEM_HANDLE_DESC, CUDA_EXTERNAL_MEMORY_HANDLE_DESC, handle.fd)
SX_LAYOUT(own_MEM_HANDLE_DESC, CUDA_EXTERNAL_MEMORY_HANDLE_DESC, size)
SX_LAYOUT(own_MEM_HANDLE_DESC, CUDA_EXTERNAL_MEMORY_HANDLE_DESC, flags)
_Static_assert(sizeof(own_MEM_BUFFER_DESC) == sizeof(CUDA_EXTERNAL_MEMORY_BUFFER_DESC), "buffer desc");
SX_LAYOUT(own_MEM_BUFFER_DESC, CUDA_EXTERNAL_MEMORY_BUFFER_DESC, size)
_Static_assert(sizeof(own_SEM_HANDLE_DESC) == sizeof(CUDA_EXTERNAL_SEMAPHORE_HANDLE_DESC), "semaphore desc");
SX_LAYOUT(own_SEM_HANDLE_DESC, CUDA_EXTERNAL_SEMAPHORE_HANDLE_DESC, handle.fd)
SX_LAYOUT(own_SEM_HANDLE_DESC, CUDA_EXTERNAL_SEMAPHORE_HANDLE_DESC, flags)
_Static_assert(sizeof(own_SEM_SIGNAL_PARAMS) == sizeof(CUDA_EXTERNAL_SEMAPHORE_SIGNAL_PARAMS), "signal params");
SX_LAYOUT(own_SEM_SIGNAL_PARAMS, CUDA_EXTERNAL_SEMAPHORE_SIGNAL_PARAMS, params.fence.value)
SX_LAYOUT(own_SEM_SIGNAL_PARAMS, CUDA_EXTERNAL_SEMAPHORE_SIGNAL_PARAMS, flags)
_Static_assert(sizeof(own_SEM_WAIT_PARAMS) == sizeof(CUDA_EXTERNAL_SEMAPHORE_WAIT_PARAMS), "wait params");
SX_LAYOUT(own_SEM_WAIT_PARAMS, CUDA_EXTERNAL_SEMAPHORE_WAIT_PARAMS, params.fence.value)
SX_LAYOUT(own_SEM_WAIT_PARAMS, CUDA_EXTERNAL_SEMAPHORE_WAIT_PARAMS, flags)
_Static_assert(sizeof(own_MEMCPY2D) == sizeof(CUDA_MEMCPY2D), "memcpy2d");
SX_LAYOUT(own_MEMCPY2D, CUDA_MEMCPY2D, srcMemoryType)
SX_LAYOUT(own_MEMCPY2D, CUDA_MEMCPY2D, srcDevice)
SX_LAYOUT(own_MEMCPY2D, CUDA_MEMCPY2D, srcPitch)
SX_LAYOUT(own_MEMCPY2D, CUDA_MEMCPY2D, dstMemoryType)
SX_LAYOUT(own_MEMCPY2D, CUDA_MEMCPY2D, dstDevice)
SX_LAYOUT(own_MEMCPY2D, CUDA_MEMCPY2D, dstPitch)
SX_LAYOUT(own_MEMCPY2D, CUDA_MEMCPY2D, WidthInBytes)
SX_LAYOUT(own_MEMCPY2D, CUDA_MEMCPY2D, Height)
_Static_assert(SX_CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD == CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD, "opaque fd");
_Static_assert(SX_CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_TIMELINE_SEMAPHORE_FD ==
                   CU_EXTERNAL_SEMAPHORE_HANDLE_TYPE_TIMELINE_SEMAPHORE_FD, "timeline fd");
_Static_assert(SX_CUDA_EXTERNAL_MEMORY_DEDICATED == CUDA_EXTERNAL_MEMORY_DEDICATED, "dedicated");
_Static_assert(SX_CU_MEMORYTYPE_DEVICE == CU_MEMORYTYPE_DEVICE, "memory type device");
_Static_assert(SX_CU_STREAM_NON_BLOCKING == CU_STREAM_NON_BLOCKING, "non-blocking stream");

typedef int ssvk_cuda_check_unit;
