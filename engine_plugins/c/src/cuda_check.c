/* cuda_check.c: compiled only when CUDA headers are found; fails the build if cuda_api.h's
 * declarations differ from the real driver API (every function's type, the handle sizes, the event
 * flags, the not-ready result). Defines nothing the library uses. */
#include <cuda.h>

#define SS_CUDA_REAL_TYPES
#include "cuda_api.h"

#define SS_SAME(name, ret, args) _Static_assert(__builtin_types_compatible_p(__typeof__(&name), ret(*) args), #name);
SS_CUDA_FUNCTIONS(SS_SAME)

_Static_assert(sizeof(CUipcMemHandle) == 64 && sizeof(CUipcEventHandle) == 64, "IPC handles are 64 bytes");
_Static_assert(sizeof(CUdeviceptr) == sizeof(unsigned long long), "CUdeviceptr");
_Static_assert(sizeof(CUdevice) == sizeof(int) && sizeof(CUresult) == sizeof(int), "CUdevice, CUresult");
_Static_assert(SS_CU_EVENT_DISABLE_TIMING == CU_EVENT_DISABLE_TIMING, "CU_EVENT_DISABLE_TIMING");
_Static_assert(SS_CU_EVENT_INTERPROCESS == CU_EVENT_INTERPROCESS, "CU_EVENT_INTERPROCESS");
_Static_assert(SS_CUDA_ERROR_NOT_READY == CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY");

typedef int ss_cuda_check_unit; /* ISO C wants a translation unit to declare something */
