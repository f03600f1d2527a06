/* vk_bridge.c: the Vulkan half of the bridge (ssvk.h): the format table, the plane plan built from
 * the session's layout, the exportable buffers and timeline semaphores, and the recorded copies.
 *
 * Invariants: every plane of the plan lies inside the input buffer and, at the layout's offset and
 * pitch, inside the ring's input slot; no two planes overlap in the slot; channels sharing an offset
 * share one plane (the layout's own rule makes their formats equal). A plane Vulkan can write at its
 * slot offset and pitch is "mirrored": it lies in the buffer exactly as in the slot, so every
 * mirrored plane reaches the slot in one copy of the span that holds them (the bytes between
 * planes are the slot's padding). The others lie after that span with padded rows, one copy each. The buffers are dedicated allocations (what CUDA's import of a
 * Vulkan buffer expects), and their sizes are the allocations' real sizes. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"

static __thread char last_error[256];

const char *ssvk_last_error(void) { return last_error; }

void ssvk_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

static const ssvk_format FORMATS[] = {
    {"r8_unorm", VK_FORMAT_R8_UNORM, 1},
    {"rg8_unorm", VK_FORMAT_R8G8_UNORM, 2},
    {"rgba8_unorm", VK_FORMAT_R8G8B8A8_UNORM, 4},
    {"r16f", VK_FORMAT_R16_SFLOAT, 2},
    {"rg16f", VK_FORMAT_R16G16_SFLOAT, 4},
    {"rgba16f", VK_FORMAT_R16G16B16A16_SFLOAT, 8},
    {"r32f", VK_FORMAT_R32_SFLOAT, 4},
    {"rg32f", VK_FORMAT_R32G32_SFLOAT, 8},
    {"rgba32f", VK_FORMAT_R32G32B32A32_SFLOAT, 16},
    {"r32_uint", VK_FORMAT_R32_UINT, 4},
};

const ssvk_format *ssvk_format_table(uint32_t *count) {
    *count = sizeof FORMATS / sizeof *FORMATS;
    return FORMATS;
}

const ssvk_format *ssvk_format_find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof FORMATS / sizeof *FORMATS; i++)
        if (strcmp(FORMATS[i].name, name) == 0) return &FORMATS[i];
    return NULL;
}

static uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

/* A plane can lie in the input buffer exactly where it lies in the slot (same offset, same pitch)
 * when Vulkan can copy an image there: the offset a multiple of the texel size and of 4, the pitch a
 * whole number of texels. */
static int mirrorable(const ssvk_format *f, uint64_t slot_offset, uint64_t pitch) {
    uint64_t texel = f->pixel_bytes < 4 ? 4 : f->pixel_bytes;
    return slot_offset % texel == 0 && pitch % f->pixel_bytes == 0;
}

static VkResult plan(const ssvk_config *cfg, ssvk_bridge *b) {
    uint64_t span_end = 0, span_start = UINT64_MAX, offset;
    ssvk_info *info = &b->info;
    for (uint32_t i = 0; i < cfg->channel_count; i++) {
        const ss_channel *ch = &cfg->channels[i];
        const ssvk_format *f = ssvk_format_find(ch->format);
        ssvk_plane *p;
        uint64_t tight = (uint64_t)cfg->width * (f ? f->pixel_bytes : 0), pitch, end;
        int shared = 0;
        if (!f) {
            ssvk_set_error("channel %s: unknown format %s", ch->name ? ch->name : "?", ch->format ? ch->format : "(null)");
            return VK_ERROR_FORMAT_NOT_SUPPORTED;
        }
        for (uint32_t k = 0; k < info->plane_count; k++) shared |= info->planes[k].slot_offset == ch->offset;
        if (shared) continue;
        if (info->plane_count == SSVK_MAX_PLANES) {
            ssvk_set_error("more than %u planes", SSVK_MAX_PLANES);
            return VK_ERROR_INITIALIZATION_FAILED;
        }
        pitch = ch->row_pitch ? ch->row_pitch : tight;
        end = ch->offset + pitch * (cfg->height - 1) + tight;
        if (pitch < tight || pitch > UINT32_MAX || end > cfg->input_slot_bytes) {
            ssvk_set_error("channel %s: its plane (offset %llu, pitch %llu) does not fit a %llu-byte slot", ch->name,
                           (unsigned long long)ch->offset, (unsigned long long)pitch,
                           (unsigned long long)cfg->input_slot_bytes);
            return VK_ERROR_INITIALIZATION_FAILED;
        }
        for (uint32_t k = 0; k < info->plane_count; k++) {
            const ssvk_plane *q = &info->planes[k];
            uint64_t q_end = q->slot_offset + (uint64_t)q->slot_pitch * (cfg->height - 1) +
                             (uint64_t)cfg->width * q->format->pixel_bytes;
            if (ch->offset < q_end && q->slot_offset < end) {
                ssvk_set_error("channel %s's plane overlaps channel %s's in the slot", ch->name, q->channel);
                return VK_ERROR_INITIALIZATION_FAILED;
            }
        }
        p = &info->planes[info->plane_count++];
        p->format = f;
        p->channel = ch->name;
        p->slot_offset = ch->offset;
        p->slot_pitch = (uint32_t)pitch;
        p->mirrored = mirrorable(f, ch->offset, pitch);
        if (p->mirrored) { /* in the buffer as in the slot: one copy moves all such planes */
            p->offset = ch->offset;
            p->row_pitch = (uint32_t)pitch;
            if (ch->offset < span_start) span_start = ch->offset;
            if (end > span_end) span_end = end;
        }
    }
    if (info->plane_count == 0) {
        ssvk_set_error("the layout has no channels");
        return VK_ERROR_INITIALIZATION_FAILED;
    }
    /* the planes the layout keeps from mirroring go after the span, rows padded to SSVK_ROW_ALIGN */
    offset = align_up(span_end, SSVK_ROW_ALIGN);
    info->copy_count = span_end > 0;
    for (uint32_t i = 0; i < info->plane_count; i++) {
        ssvk_plane *p = &info->planes[i];
        if (p->mirrored) continue;
        p->row_pitch = (uint32_t)align_up((uint64_t)cfg->width * p->format->pixel_bytes, SSVK_ROW_ALIGN);
        p->offset = offset;
        offset = align_up(offset + (uint64_t)p->row_pitch * cfg->height, SSVK_ROW_ALIGN);
        info->copy_count++;
    }
    info->span_offset = span_end > 0 ? span_start : 0;
    info->span_bytes = span_end > 0 ? span_end - span_start : 0;
    b->input_used = offset;
    return VK_SUCCESS;
}

/* Device-local first (what CUDA reads fast); with `host`, only host-visible types, coherent and
 * device-local preferred. `flags` gets the chosen type's properties. */
static uint32_t memory_type(VkPhysicalDevice phys, uint32_t bits, int host, VkMemoryPropertyFlags *flags) {
    static const VkMemoryPropertyFlags prefs[2][4] = {
        {VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0, 0, 0},
        {VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT | VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT,
         VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
         VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT}};
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(phys, &mp);
    for (int k = 0; k < 4; k++)
        for (uint32_t i = 0; i < mp.memoryTypeCount; i++)
            if ((bits & (1u << i)) && (mp.memoryTypes[i].propertyFlags & prefs[host][k]) == prefs[host][k]) {
                if (flags) *flags = mp.memoryTypes[i].propertyFlags;
                return i;
            }
    return UINT32_MAX;
}

static int buffer_exportable(VkPhysicalDevice phys, VkBufferUsageFlags usage) {
    VkPhysicalDeviceExternalBufferInfo bi = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_BUFFER_INFO};
    VkExternalBufferProperties bp = {VK_STRUCTURE_TYPE_EXTERNAL_BUFFER_PROPERTIES};
    bi.usage = usage;
    bi.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
    vkGetPhysicalDeviceExternalBufferProperties(phys, &bi, &bp);
    return (bp.externalMemoryProperties.externalMemoryFeatures & VK_EXTERNAL_MEMORY_FEATURE_EXPORTABLE_BIT) != 0;
}

static int semaphore_exportable(VkPhysicalDevice phys) {
    VkSemaphoreTypeCreateInfo type = {VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO, NULL, VK_SEMAPHORE_TYPE_TIMELINE, 0};
    VkPhysicalDeviceExternalSemaphoreInfo si = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_SEMAPHORE_INFO, &type,
                                                VK_EXTERNAL_SEMAPHORE_HANDLE_TYPE_OPAQUE_FD_BIT};
    VkExternalSemaphoreProperties sp = {VK_STRUCTURE_TYPE_EXTERNAL_SEMAPHORE_PROPERTIES};
    vkGetPhysicalDeviceExternalSemaphoreProperties(phys, &si, &sp);
    return (sp.externalSemaphoreFeatures & VK_EXTERNAL_SEMAPHORE_FEATURE_EXPORTABLE_BIT) != 0;
}

static VkResult ssvk_make_buffer(VkPhysicalDevice phys, VkDevice dev, uint64_t size, int import_fd, int host,
                                 VkBuffer *buf, VkDeviceMemory *mem, uint64_t *alloc_size, VkMemoryPropertyFlags *flags) {
    VkExternalMemoryBufferCreateInfo ext = {VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO, NULL,
                                            VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT};
    VkBufferCreateInfo bci = {VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, &ext};
    VkMemoryRequirements req;
    VkMemoryDedicatedAllocateInfo dedicated = {VK_STRUCTURE_TYPE_MEMORY_DEDICATED_ALLOCATE_INFO};
    VkExportMemoryAllocateInfo exp = {VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO, &dedicated,
                                      VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT};
    VkImportMemoryFdInfoKHR imp = {VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR, &dedicated,
                                   VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT, import_fd};
    VkMemoryAllocateInfo mai = {VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, import_fd >= 0 ? (void *)&imp : (void *)&exp};
    VkResult rc;
    bci.size = size;
    bci.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    *buf = VK_NULL_HANDLE;
    *mem = VK_NULL_HANDLE;
    if ((rc = vkCreateBuffer(dev, &bci, NULL, buf)) != VK_SUCCESS) {
        ssvk_set_error("vkCreateBuffer (%llu bytes, exportable): %d", (unsigned long long)size, rc);
        return rc;
    }
    vkGetBufferMemoryRequirements(dev, *buf, &req);
    dedicated.buffer = *buf;
    mai.allocationSize = import_fd >= 0 && alloc_size && *alloc_size ? *alloc_size : req.size;
    mai.memoryTypeIndex = memory_type(phys, req.memoryTypeBits, host, flags);
    if (mai.memoryTypeIndex == UINT32_MAX) {
        ssvk_set_error("no %smemory type for a %llu-byte exportable buffer", host ? "host-visible " : "",
                       (unsigned long long)size);
        vkDestroyBuffer(dev, *buf, NULL);
        *buf = VK_NULL_HANDLE;
        return VK_ERROR_FEATURE_NOT_PRESENT;
    }
    if ((rc = vkAllocateMemory(dev, &mai, NULL, mem)) != VK_SUCCESS ||
        (rc = vkBindBufferMemory(dev, *buf, *mem, 0)) != VK_SUCCESS) {
        ssvk_set_error("%s memory for a %llu-byte buffer: %d", import_fd >= 0 ? "importing" : "allocating exportable",
                       (unsigned long long)size, rc);
        if (*mem) vkFreeMemory(dev, *mem, NULL);
        vkDestroyBuffer(dev, *buf, NULL);
        *buf = VK_NULL_HANDLE;
        *mem = VK_NULL_HANDLE;
        return rc;
    }
    if (alloc_size) *alloc_size = mai.allocationSize;
    return VK_SUCCESS;
}

static VkResult ssvk_make_timeline(VkDevice dev, int exportable, VkSemaphore *out) {
    VkExportSemaphoreCreateInfo exp = {VK_STRUCTURE_TYPE_EXPORT_SEMAPHORE_CREATE_INFO, NULL,
                                       VK_EXTERNAL_SEMAPHORE_HANDLE_TYPE_OPAQUE_FD_BIT};
    VkSemaphoreTypeCreateInfo type = {VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO, exportable ? &exp : NULL,
                                      VK_SEMAPHORE_TYPE_TIMELINE, 0};
    VkSemaphoreCreateInfo sci = {VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, &type};
    VkResult rc = vkCreateSemaphore(dev, &sci, NULL, out);
    if (rc != VK_SUCCESS) ssvk_set_error("vkCreateSemaphore (timeline%s): %d", exportable ? ", exportable" : "", rc);
    return rc;
}

VkResult ssvk_create(const ssvk_config *cfg, ssvk_bridge **out) {
    ssvk_bridge *b;
    VkResult rc;
    const char *ofmt;
    const VkBufferUsageFlags usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    if (!cfg || cfg->size < sizeof *cfg || !out || !cfg->device || !cfg->physical || !cfg->channels ||
        cfg->width == 0 || cfg->height == 0) {
        ssvk_set_error("ssvk_create: a NULL, a short config or a zero size");
        return VK_ERROR_INITIALIZATION_FAILED;
    }
    ofmt = cfg->output_format ? cfg->output_format : SS_FORMAT_RGBA8;
    if (strcmp(ofmt, SS_FORMAT_RGBA8) != 0 && strcmp(ofmt, SS_FORMAT_RGBA16F) != 0) {
        ssvk_set_error("output format must be %s or %s, not %s", SS_FORMAT_RGBA8, SS_FORMAT_RGBA16F, ofmt);
        return VK_ERROR_FORMAT_NOT_SUPPORTED;
    }
    if (!buffer_exportable(cfg->physical, usage)) {
        ssvk_set_error("the device cannot export buffer memory as an opaque fd (VK_KHR_external_memory_fd)");
        return VK_ERROR_EXTENSION_NOT_PRESENT;
    }
    b = calloc(1, sizeof *b);
    if (!b) return VK_ERROR_OUT_OF_HOST_MEMORY;
    b->phys = cfg->physical;
    b->dev = cfg->device;
    b->width = cfg->width;
    b->height = cfg->height;
    if ((rc = plan(cfg, b)) != VK_SUCCESS) goto fail;
    b->info.semaphores_exportable = semaphore_exportable(cfg->physical);
    if (cfg->require_semaphore_export && !b->info.semaphores_exportable) {
        ssvk_set_error("the device cannot export timeline semaphores as opaque fds (VK_KHR_external_semaphore_fd)");
        rc = VK_ERROR_EXTENSION_NOT_PRESENT;
        goto fail;
    }
    b->info.output_format = strcmp(ofmt, SS_FORMAT_RGBA8) == 0 ? VK_FORMAT_R8G8B8A8_UNORM : VK_FORMAT_R16G16B16A16_SFLOAT;
    b->info.output_frame_bytes = (uint64_t)cfg->width * cfg->height *
                                 (strcmp(ofmt, SS_FORMAT_RGBA8) == 0 ? SS_OUTPUT_BYTES_PER_PIXEL_RGBA8
                                                                     : SS_OUTPUT_BYTES_PER_PIXEL_RGBA16F);
    b->host_access = cfg->host_access != 0;
    if ((rc = ssvk_make_buffer(b->phys, b->dev, b->input_used, -1, b->host_access, &b->info.input,
                               &b->info.input_memory, &b->info.input_bytes, &b->memory_flags[0])) != VK_SUCCESS ||
        (rc = ssvk_make_buffer(b->phys, b->dev, b->info.output_frame_bytes, -1, b->host_access, &b->info.output,
                               &b->info.output_memory, &b->info.output_bytes, &b->memory_flags[1])) != VK_SUCCESS)
        goto fail;
    for (int i = 0; i < SSVK_SEMAPHORES; i++)
        if ((rc = ssvk_make_timeline(b->dev, b->info.semaphores_exportable, &b->info.sems[i])) != VK_SUCCESS) goto fail;
    *out = b;
    return VK_SUCCESS;
fail:
    ssvk_destroy(b);
    return rc;
}

void ssvk_destroy(ssvk_bridge *b) {
    if (!b) return;
    for (int i = 0; i < SSVK_SEMAPHORES; i++)
        if (b->info.sems[i]) vkDestroySemaphore(b->dev, b->info.sems[i], NULL);
    if (b->info.input) vkDestroyBuffer(b->dev, b->info.input, NULL);
    if (b->info.output) vkDestroyBuffer(b->dev, b->info.output, NULL);
    if (b->info.input_memory) vkFreeMemory(b->dev, b->info.input_memory, NULL);
    if (b->info.output_memory) vkFreeMemory(b->dev, b->info.output_memory, NULL);
    free(b);
}

void ssvk_get_info(const ssvk_bridge *b, ssvk_info *out) { *out = b->info; }

VkResult ssvk_export_memory(ssvk_bridge *b, int output, int *fd) {
    PFN_vkGetMemoryFdKHR get = (PFN_vkGetMemoryFdKHR)vkGetDeviceProcAddr(b->dev, "vkGetMemoryFdKHR");
    VkMemoryGetFdInfoKHR gi = {VK_STRUCTURE_TYPE_MEMORY_GET_FD_INFO_KHR, NULL,
                               output ? b->info.output_memory : b->info.input_memory,
                               VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT};
    VkResult rc;
    *fd = -1;
    if (!get) {
        ssvk_set_error("vkGetMemoryFdKHR is missing: enable VK_KHR_external_memory_fd on the device");
        return VK_ERROR_EXTENSION_NOT_PRESENT;
    }
    if ((rc = get(b->dev, &gi, fd)) != VK_SUCCESS) ssvk_set_error("vkGetMemoryFdKHR: %d", rc);
    return rc;
}

VkResult ssvk_export_semaphore(ssvk_bridge *b, ssvk_semaphore which, int *fd) {
    PFN_vkGetSemaphoreFdKHR get = (PFN_vkGetSemaphoreFdKHR)vkGetDeviceProcAddr(b->dev, "vkGetSemaphoreFdKHR");
    VkSemaphoreGetFdInfoKHR gi = {VK_STRUCTURE_TYPE_SEMAPHORE_GET_FD_INFO_KHR, NULL,
                                  b->info.sems[(unsigned)which % SSVK_SEMAPHORES],
                                  VK_EXTERNAL_SEMAPHORE_HANDLE_TYPE_OPAQUE_FD_BIT};
    VkResult rc;
    *fd = -1;
    if (!b->info.semaphores_exportable || !get) {
        ssvk_set_error("the device cannot export timeline semaphores as opaque fds (VK_KHR_external_semaphore_fd)");
        return VK_ERROR_EXTENSION_NOT_PRESENT;
    }
    if ((rc = get(b->dev, &gi, fd)) != VK_SUCCESS) ssvk_set_error("vkGetSemaphoreFdKHR: %d", rc);
    return rc;
}

void ssvk_record_input(ssvk_bridge *b, VkCommandBuffer cmd, uint32_t plane, VkImage image, VkImageLayout layout) {
    const ssvk_plane *p = &b->info.planes[plane];
    VkBufferImageCopy region = {0};
    VkBufferMemoryBarrier barrier = {VK_STRUCTURE_TYPE_BUFFER_MEMORY_BARRIER};
    region.bufferOffset = p->offset;
    region.bufferRowLength = p->row_pitch / p->format->pixel_bytes;
    region.bufferImageHeight = b->height;
    region.imageSubresource.aspectMask = VK_IMAGE_ASPECT_COLOR_BIT;
    region.imageSubresource.layerCount = 1;
    region.imageExtent.width = b->width;
    region.imageExtent.height = b->height;
    region.imageExtent.depth = 1;
    vkCmdCopyImageToBuffer(cmd, image, layout, b->info.input, 1, &region);
    /* The semaphore signal that follows makes the writes available to the other API; the barrier
     * keeps the copy ordered after earlier transfers into the same plane. */
    barrier.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    barrier.dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT;
    barrier.srcQueueFamilyIndex = barrier.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
    barrier.buffer = b->info.input;
    barrier.offset = p->offset;
    barrier.size = (uint64_t)p->row_pitch * b->height;
    if (b->host_access) /* the host half reads it: a semaphore alone does not make device writes host-visible */
        barrier.dstAccessMask |= VK_ACCESS_HOST_READ_BIT;
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_TRANSFER_BIT | (b->host_access ? VK_PIPELINE_STAGE_HOST_BIT : 0), 0, 0, NULL, 1,
                         &barrier, 0, NULL);
}

void ssvk_record_output(ssvk_bridge *b, VkCommandBuffer cmd, VkImage image, VkImageLayout layout) {
    VkBufferImageCopy region = {0};
    region.imageSubresource.aspectMask = VK_IMAGE_ASPECT_COLOR_BIT;
    region.imageSubresource.layerCount = 1;
    region.imageExtent.width = b->width;
    region.imageExtent.height = b->height;
    region.imageExtent.depth = 1;
    vkCmdCopyBufferToImage(cmd, b->info.output, image, layout, 1, &region);
}

static VkResult submit(VkQueue q, VkCommandBuffer cmd, VkSemaphore wait, uint64_t wait_value, VkSemaphore signal,
                       uint64_t signal_value, VkFence fence) {
    VkPipelineStageFlags stage = VK_PIPELINE_STAGE_TRANSFER_BIT;
    VkTimelineSemaphoreSubmitInfo tl = {VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
    VkSubmitInfo si = {VK_STRUCTURE_TYPE_SUBMIT_INFO, &tl};
    VkResult rc;
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd;
    tl.waitSemaphoreValueCount = si.waitSemaphoreCount = 1;
    tl.pWaitSemaphoreValues = &wait_value;
    si.pWaitSemaphores = &wait;
    si.pWaitDstStageMask = &stage;
    tl.signalSemaphoreValueCount = si.signalSemaphoreCount = 1;
    tl.pSignalSemaphoreValues = &signal_value;
    si.pSignalSemaphores = &signal;
    if ((rc = vkQueueSubmit(q, 1, &si, fence)) != VK_SUCCESS) ssvk_set_error("vkQueueSubmit: %d", rc);
    return rc;
}

VkResult ssvk_submit_input(ssvk_bridge *b, VkQueue q, VkCommandBuffer cmd, uint64_t n, VkFence fence) {
    return submit(q, cmd, b->info.sems[SSVK_CONSUMED], n ? n - 1 : 0, b->info.sems[SSVK_RENDERED], n, fence);
}

VkResult ssvk_submit_output(ssvk_bridge *b, VkQueue q, VkCommandBuffer cmd, uint64_t m, VkFence fence) {
    return submit(q, cmd, b->info.sems[SSVK_STYLIZED], m, b->info.sems[SSVK_COMPOSITED], m, fence);
}

VkResult ssvk_import_buffer(VkPhysicalDevice phys, VkDevice dev, int fd, uint64_t alloc_size, VkBuffer *buf,
                            VkDeviceMemory *mem) {
    uint64_t size = alloc_size;
    return ssvk_make_buffer(phys, dev, alloc_size, fd, 0, buf, mem, &size, NULL);
}
