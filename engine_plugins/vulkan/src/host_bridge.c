/* host_bridge.c: the bridge's host half (ssvk.h, "the host half"): the copies into and out of the
 * ring done by the CPU through mapped memory, for shm sessions where there is no CUDA.
 *
 * Invariants: nothing here waits. A copy in happens only once the `rendered` timeline shows the
 * input copy it reads (read with vkGetSemaphoreCounterValue), a copy out only once `composited`
 * shows that the previous composite has read the output buffer; each then signals its semaphore from
 * the host (vkSignalSemaphore), exactly as the CUDA half signals it on a stream. The input copy's
 * barrier includes the host read (vk_bridge.c, host_access), and the caller submits the composite
 * after the copy out, so that the queue submission makes the host's writes visible to the device. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "bridge.h"

struct ssvk_host {
    ssvk_bridge *bridge;
    unsigned char *in, *out;
};

ss_status ssvk_host_open(ssvk_bridge *b, ssvk_host **out) {
    ssvk_host *h;
    void *in = NULL, *o = NULL;
    VkResult rc;
    if (!b || !out) {
        ssvk_set_error("ssvk_host_open: a NULL");
        return SS_INVALID_ARGUMENT;
    }
    if (!b->host_access) {
        ssvk_set_error("the bridge's buffers are not host-visible: create it with host_access");
        return SS_INVALID_ARGUMENT;
    }
    if ((rc = vkMapMemory(b->dev, b->info.input_memory, 0, VK_WHOLE_SIZE, 0, &in)) != VK_SUCCESS ||
        (rc = vkMapMemory(b->dev, b->info.output_memory, 0, VK_WHOLE_SIZE, 0, &o)) != VK_SUCCESS) {
        ssvk_set_error("vkMapMemory of the bridge's buffers: %d", rc);
        if (in) vkUnmapMemory(b->dev, b->info.input_memory);
        return SS_SYSTEM_FAILED;
    }
    if (!(h = calloc(1, sizeof *h))) {
        vkUnmapMemory(b->dev, b->info.input_memory);
        vkUnmapMemory(b->dev, b->info.output_memory);
        return SS_OUT_OF_MEMORY;
    }
    h->bridge = b;
    h->in = in;
    h->out = o;
    *out = h;
    return SS_OK;
}

void ssvk_host_close(ssvk_host *h) {
    if (!h) return;
    vkUnmapMemory(h->bridge->dev, h->bridge->info.input_memory);
    vkUnmapMemory(h->bridge->dev, h->bridge->info.output_memory);
    free(h);
}

static ss_status value_of(ssvk_host *h, ssvk_semaphore which, uint64_t *value) {
    VkResult rc = vkGetSemaphoreCounterValue(h->bridge->dev, h->bridge->info.sems[which], value);
    if (rc != VK_SUCCESS) {
        ssvk_set_error("vkGetSemaphoreCounterValue: %d", rc);
        return SS_SYSTEM_FAILED;
    }
    return SS_OK;
}

static ss_status signal_to(ssvk_host *h, ssvk_semaphore which, uint64_t value) {
    VkSemaphoreSignalInfo si = {VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO, NULL, h->bridge->info.sems[which], value};
    uint64_t now;
    ss_status st = value_of(h, which, &now);
    if (st != SS_OK) return st;
    if (value <= now) { /* a timeline only goes up: the caller counted wrong */
        ssvk_set_error("semaphore %d is at %llu already; %llu does not follow", (int)which, (unsigned long long)now,
                       (unsigned long long)value);
        return SS_WRONG_STATE;
    }
    if (vkSignalSemaphore(h->bridge->dev, &si) != VK_SUCCESS) {
        ssvk_set_error("vkSignalSemaphore");
        return SS_SYSTEM_FAILED;
    }
    return SS_OK;
}

static ss_status sync_range(ssvk_host *h, int output, int flush) {
    VkMappedMemoryRange r = {VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE, NULL,
                             output ? h->bridge->info.output_memory : h->bridge->info.input_memory, 0, VK_WHOLE_SIZE};
    VkResult rc;
    if (h->bridge->memory_flags[output] & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) return SS_OK;
    rc = flush ? vkFlushMappedMemoryRanges(h->bridge->dev, 1, &r) : vkInvalidateMappedMemoryRanges(h->bridge->dev, 1, &r);
    if (rc != VK_SUCCESS) {
        ssvk_set_error("%s of the mapped memory: %d", flush ? "vkFlushMappedMemoryRanges" : "vkInvalidateMappedMemoryRanges", rc);
        return SS_SYSTEM_FAILED;
    }
    return SS_OK;
}

ss_status ssvk_host_copy_in(ssvk_host *h, uint64_t n, void *slot) {
    const ssvk_info *info;
    uint64_t rendered;
    ss_status st;
    if (!h || !slot || n == 0) {
        ssvk_set_error("ssvk_host_copy_in: a NULL or n = 0");
        return SS_INVALID_ARGUMENT;
    }
    info = &h->bridge->info;
    if ((st = value_of(h, SSVK_RENDERED, &rendered)) != SS_OK) return st;
    if (rendered < n) return SS_BUSY;
    if ((st = sync_range(h, 0, 0)) != SS_OK) return st;
    if (info->span_bytes) memcpy((unsigned char *)slot + info->span_offset, h->in + info->span_offset, info->span_bytes);
    for (uint32_t i = 0; i < info->plane_count; i++) {
        const ssvk_plane *p = &info->planes[i];
        size_t row = (size_t)h->bridge->width * p->format->pixel_bytes;
        if (p->mirrored) continue;
        for (uint32_t y = 0; y < h->bridge->height; y++)
            memcpy((unsigned char *)slot + p->slot_offset + (uint64_t)y * p->slot_pitch,
                   h->in + p->offset + (uint64_t)y * p->row_pitch, row);
    }
    return signal_to(h, SSVK_CONSUMED, n);
}

ss_status ssvk_host_copy_out(ssvk_host *h, uint64_t m, const void *output) {
    uint64_t composited;
    ss_status st;
    if (!h || !output || m == 0) {
        ssvk_set_error("ssvk_host_copy_out: a NULL or m = 0");
        return SS_INVALID_ARGUMENT;
    }
    if ((st = value_of(h, SSVK_COMPOSITED, &composited)) != SS_OK) return st;
    if (composited + 1 < m) return SS_BUSY;
    memcpy(h->out, output, (size_t)h->bridge->info.output_frame_bytes);
    if ((st = sync_range(h, 1, 1)) != SS_OK) return st;
    return signal_to(h, SSVK_STYLIZED, m);
}
