/* cuda_loader.h: the CUDA driver loaded at run time (dlopen), one definition for every user.
 *
 * SS_CUDA_LOADER(FUNCTIONS) defines, in the including file, a `cu` table with one pointer per
 * function FUNCTIONS lists (an X-macro of (name, return type, arguments)), `cu_once`, and
 * `cu_load()`, which opens libcuda.so.1, resolves every name and calls cuInit. `cu.state` is 1 once
 * loaded, -1 when the driver is unusable (`cu.why` says why), 0 before the first try. A library
 * that takes CUDA this way loads, and works without CUDA, on machines that have none.
 * libstreamstyle's cuda-ipc ring and the Vulkan bridge's CUDA half both use it.
 */
#ifndef SS_CUDA_LOADER_H
#define SS_CUDA_LOADER_H

#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#define SS_LOADER_FIELD(name, ret, args) ret(*name) args;
#define SS_LOADER_RESOLVE(name, ret, args)                                  \
    *(void **)(&cu.name) = dlsym(cu.lib, #name);                            \
    if (!cu.name) {                                                         \
        strncpy(cu.why, "libcuda lacks " #name, sizeof cu.why - 1);         \
        cu.state = -1;                                                      \
        return;                                                             \
    }

#define SS_CUDA_LOADER(FUNCTIONS)                                                                   \
    static struct {                                                                                 \
        FUNCTIONS(SS_LOADER_FIELD)                                                                  \
        void *lib;                                                                                  \
        int state; /* 0 not tried, 1 loaded, -1 unavailable */                                      \
        char why[160];                                                                              \
    } cu;                                                                                           \
    static pthread_once_t cu_once = PTHREAD_ONCE_INIT;                                              \
    static void cu_load(void) {                                                                     \
        static const char *const names[] = {"libcuda.so.1", "libcuda.so"};                         \
        for (size_t i = 0; i < sizeof names / sizeof *names && !cu.lib; i++)                        \
            cu.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);                                       \
        if (!cu.lib) {                                                                              \
            const char *e = dlerror();                                                              \
            strncpy(cu.why, e ? e : "libcuda.so.1 not found", sizeof cu.why - 1);                  \
            cu.state = -1;                                                                          \
            return;                                                                                 \
        }                                                                                           \
        FUNCTIONS(SS_LOADER_RESOLVE)                                                                \
        if (cu.cuInit(0) != 0) {                                                                    \
            strncpy(cu.why, "cuInit failed: no usable CUDA device or driver", sizeof cu.why - 1);   \
            cu.state = -1;                                                                          \
            return;                                                                                 \
        }                                                                                           \
        cu.state = 1;                                                                               \
    }

#endif
