/* bridge.h: what the bridge's two halves share (vk_bridge.c makes it, cuda_bridge.c reads it). */
#ifndef SSVK_BRIDGE_H
#define SSVK_BRIDGE_H

#include "ssvk.h"

struct ssvk_bridge {
    VkPhysicalDevice phys;
    VkDevice dev;
    uint32_t width, height;
    uint64_t input_used; /* bytes the planes take in the input buffer */
    int host_access;     /* the buffers are host-visible (ssvk_config.host_access) */
    VkMemoryPropertyFlags memory_flags[2]; /* input, output: the memory types' properties */
    ssvk_info info;
};

void ssvk_set_error(const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#endif
