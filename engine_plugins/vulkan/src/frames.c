/* frames.c: the per-frame driver (ssvk_frames.h) over libstreamstyle's frame path and the bridge.
 *
 * Counting: n numbers input copies (the `rendered`/`consumed` timelines), m composites
 * (`stylized`/`composited`), both from 1, as ssvk.h defines them; each command buffer of a ring of
 * RING is reused only when the timeline its submit signals has passed it. The host half leaves at
 * most one input copy pending (the bridge has one input buffer); the CUDA half never leaves one: its
 * copy is queued on the stream behind a GPU wait right after the Vulkan submit.
 *
 * Threads: ssvk_frames_run on the render thread only; the stats' counters are atomics and the last
 * code sits under a mutex the render thread only ever try-locks, so a reader never makes it wait. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "ssvk_frames.h"

#define RING 4

struct ssvk_frames {
    ss_session *session;
    ss_channel *channels;       /* a copy of the layout (the bridge's planes point at its names) */
    char *names;
    ssvk_bridge *bridge;
    ssvk_cuda *cuda;            /* cuda-ipc */
    ssvk_host *host;            /* shm */
    void *stream;
    VkDevice dev;
    VkQueue queue;
    VkCommandPool pool;
    VkCommandBuffer in_cmd[RING], out_cmd[RING];
    uint64_t n, m;              /* input copies and composites submitted */
    /* the host half's input copy waiting for Vulkan */
    int pending;
    uint64_t pending_n;
    ss_slot pending_slot;
    int pending_has_info;
    ss_frame_info pending_info;
    /* the newest stylized frame not yet composited */
    int have_done;
    int32_t done_slot;
    uint64_t done_seq;
    pthread_mutex_t note_lock;
    ssvk_frames_stats stats;
};

static void count(uint64_t *c, uint64_t by) { __atomic_add_fetch(c, by, __ATOMIC_RELAXED); }
static void store(uint64_t *c, uint64_t v) { __atomic_store_n(c, v, __ATOMIC_RELAXED); }

static void note(ssvk_frames *f, const char *code, const char *message) {
    if (pthread_mutex_trylock(&f->note_lock) != 0) return; /* a reader has it: this note is skipped */
    snprintf(f->stats.last_code, sizeof f->stats.last_code, "%s", code ? code : "");
    snprintf(f->stats.last_message, sizeof f->stats.last_message, "%s", message ? message : "");
    pthread_mutex_unlock(&f->note_lock);
}

static uint64_t value_of(ssvk_frames *f, ssvk_semaphore which) {
    uint64_t v = 0;
    vkGetSemaphoreCounterValue(f->dev, f->bridge->info.sems[which], &v);
    return v;
}

static VkResult begin_cmd(VkCommandBuffer cmd) {
    VkCommandBufferBeginInfo bi = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, NULL,
                                   VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VkResult rc = vkResetCommandBuffer(cmd, 0);
    if (rc == VK_SUCCESS) rc = vkBeginCommandBuffer(cmd, &bi);
    if (rc != VK_SUCCESS) ssvk_set_error("vkBeginCommandBuffer: %d", rc);
    return rc;
}

void ssvk_frames_info(const ssvk_frames *f, ssvk_info *out) { ssvk_get_info(f->bridge, out); }

static void free_all(ssvk_frames *f) {
    if (f->cuda) ssvk_cuda_close(f->cuda);
    if (f->host) ssvk_host_close(f->host);
    if (f->pool) vkDestroyCommandPool(f->dev, f->pool, NULL);
    if (f->bridge) ssvk_destroy(f->bridge);
    free(f->channels);
    free(f->names);
    pthread_mutex_destroy(&f->note_lock);
    free(f);
}

ss_status ssvk_frames_create(const ssvk_frames_config *cfg, ssvk_frames **out) {
    ssvk_frames *f;
    ssvk_config bc = {sizeof bc};
    ss_session_info si = {sizeof si};
    VkCommandPoolCreateInfo pci = {VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, NULL,
                                   VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT};
    VkCommandBufferAllocateInfo ai = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, NULL, VK_NULL_HANDLE,
                                      VK_COMMAND_BUFFER_LEVEL_PRIMARY, RING};
    const char *backend;
    int cuda;
    ss_status st;
    VkResult rc;
    if (out) *out = NULL;
    if (!cfg || cfg->size < sizeof *cfg || !out || !cfg->session || !cfg->device || !cfg->physical || !cfg->queue ||
        !cfg->channels) {
        ssvk_set_error("ssvk_frames_create: a NULL or a short config");
        return SS_INVALID_ARGUMENT;
    }
    backend = cfg->backend ? cfg->backend : SS_BACKEND_SHM;
    cuda = strcmp(backend, SS_BACKEND_CUDA_IPC) == 0;
    if (!cuda && strcmp(backend, SS_BACKEND_SHM) != 0) {
        ssvk_set_error("backend must be %s or %s, not %s", SS_BACKEND_SHM, SS_BACKEND_CUDA_IPC, backend);
        return SS_INVALID_ARGUMENT;
    }
    if (ss_session_get_info(cfg->session, &si) != SS_OK || si.width != cfg->width || si.height != cfg->height ||
        si.input_slot_bytes != cfg->input_slot_bytes) {
        ssvk_set_error("the session is %ux%u with %llu-byte input slots; the config says %ux%u and %llu", si.width,
                       si.height, (unsigned long long)si.input_slot_bytes, cfg->width, cfg->height,
                       (unsigned long long)cfg->input_slot_bytes);
        return SS_INVALID_ARGUMENT;
    }
    if (cfg->channel_count == 0 || cfg->channel_count > 64) {
        ssvk_set_error("a layout has 1 to 64 channels, not %u", cfg->channel_count);
        return SS_INVALID_ARGUMENT;
    }
    if (!(f = calloc(1, sizeof *f))) return SS_OUT_OF_MEMORY;
    pthread_mutex_init(&f->note_lock, NULL);
    {   /* the layout copied: the caller's strings need not outlive this call */
        size_t bytes = 0;
        char *p;
        for (uint32_t i = 0; i < cfg->channel_count; i++) {
            const ss_channel *c = &cfg->channels[i];
            if (!c->name || !c->format) {
                ssvk_set_error("every channel needs a name and a format");
                free_all(f);
                return SS_INVALID_ARGUMENT;
            }
            bytes += strlen(c->name) + strlen(c->format) + (c->encoding ? strlen(c->encoding) : 0) + 3;
        }
        f->channels = calloc(cfg->channel_count, sizeof *f->channels);
        f->names = p = malloc(bytes);
        if (!f->channels || !p) {
            free_all(f);
            return SS_OUT_OF_MEMORY;
        }
        for (uint32_t i = 0; i < cfg->channel_count; i++) {
            const ss_channel *c = &cfg->channels[i];
            f->channels[i] = *c;
            f->channels[i].name = strcpy(p, c->name);
            p += strlen(p) + 1;
            f->channels[i].format = strcpy(p, c->format);
            p += strlen(p) + 1;
            f->channels[i].encoding = c->encoding ? strcpy(p, c->encoding) : NULL;
            if (c->encoding) p += strlen(p) + 1;
        }
    }
    f->session = cfg->session;
    f->dev = cfg->device;
    f->queue = cfg->queue;
    f->stats.size = sizeof f->stats;
    f->stats.cuda = cuda;
    bc.physical = cfg->physical;
    bc.device = cfg->device;
    bc.width = cfg->width;
    bc.height = cfg->height;
    bc.channels = f->channels;
    bc.channel_count = cfg->channel_count;
    bc.input_slot_bytes = cfg->input_slot_bytes;
    bc.output_format = cfg->output_format;
    bc.require_semaphore_export = cuda;
    bc.host_access = !cuda;
    if ((rc = ssvk_create(&bc, &f->bridge)) != VK_SUCCESS) {
        free_all(f);
        return rc == VK_ERROR_OUT_OF_HOST_MEMORY ? SS_OUT_OF_MEMORY : rc == VK_ERROR_FORMAT_NOT_SUPPORTED ||
               rc == VK_ERROR_INITIALIZATION_FAILED ? SS_INVALID_ARGUMENT : SS_SYSTEM_FAILED;
    }
    st = cuda ? ssvk_cuda_open(f->bridge, cfg->cuda_device, &f->cuda) : ssvk_host_open(f->bridge, &f->host);
    if (st != SS_OK) {
        free_all(f);
        return st;
    }
    f->stream = cuda ? ssvk_cuda_stream(f->cuda) : NULL;
    pci.queueFamilyIndex = cfg->queue_family;
    if ((rc = vkCreateCommandPool(f->dev, &pci, NULL, &f->pool)) != VK_SUCCESS) {
        ssvk_set_error("vkCreateCommandPool: %d", rc);
        free_all(f);
        return SS_SYSTEM_FAILED;
    }
    ai.commandPool = f->pool;
    if ((rc = vkAllocateCommandBuffers(f->dev, &ai, f->in_cmd)) != VK_SUCCESS ||
        (rc = vkAllocateCommandBuffers(f->dev, &ai, f->out_cmd)) != VK_SUCCESS) {
        ssvk_set_error("vkAllocateCommandBuffers: %d", rc);
        free_all(f);
        return SS_SYSTEM_FAILED;
    }
    *out = f;
    return SS_OK;
}

/* ss_submit of an input copy that reached the slot; its outcome counted */
static void send(ssvk_frames *f, const ss_slot *slot, const ss_frame_info *info) {
    uint64_t seq = 0;
    ss_status st = ss_submit(f->session, slot->index, info, f->stream, &seq);
    if (st == SS_OK) {
        count(&f->stats.sent, 1);
        store(&f->stats.last_sent_seq, seq);
    } else {
        count(&f->stats.busy, 1); /* the copy reached the slot but the frame did not go: the raw frame */
        if (st != SS_BUSY) note(f, ss_last_error_code(), ss_last_error_message());
    }
}

static ss_status finish_pending(ssvk_frames *f) {
    ss_status st;
    if (!f->pending) return SS_OK;
    st = ssvk_host_copy_in(f->host, f->pending_n, f->pending_slot.input);
    if (st == SS_BUSY) return SS_OK; /* Vulkan is not done with it: next frame */
    f->pending = 0;
    if (st != SS_OK) return st;
    send(f, &f->pending_slot, f->pending_has_info ? &f->pending_info : NULL);
    return SS_OK;
}

static void take_events(ssvk_frames *f) {
    ss_event ev;
    ss_session_info si = {sizeof si};
    while (ss_poll(f->session, &ev) == SS_OK) {
        switch (ev.kind) {
        case SS_EVENT_DONE:
            count(&f->stats.done, 1);
            store(&f->stats.last_done_seq, ev.seq);
            if (ev.slot >= 0 && (!f->have_done || ev.seq > f->done_seq)) {
                f->have_done = 1;
                f->done_slot = ev.slot;
                f->done_seq = ev.seq;
            }
            break;
        case SS_EVENT_LATE:
            count(&f->stats.late, 1);
            note(f, ev.code, ev.message);
            break;
        case SS_EVENT_ERROR:
            count(&f->stats.errors, 1);
            note(f, ev.code, ev.message);
            break;
        case SS_EVENT_SERVICE_LOST:
            f->have_done = 0; /* its output slots belong to a session that is gone */
            note(f, "unavailable", ev.message);
            break;
        case SS_EVENT_REOPENED:
            note(f, "", ev.message);
            break;
        }
    }
    if (ss_session_get_info(f->session, &si) == SS_OK) __atomic_store_n(&f->stats.live, si.live, __ATOMIC_RELAXED);
}

static ss_status composite(ssvk_frames *f, VkImage target, VkImageLayout layout) {
    VkCommandBuffer cmd;
    const void *out = NULL;
    uint64_t m = f->m + 1;
    ss_status st;
    VkResult rc;
    if (!f->have_done || target == VK_NULL_HANDLE) return SS_OK;
    if (m > RING && value_of(f, SSVK_COMPOSITED) < m - RING) return SS_OK; /* its command buffer still runs */
    if ((st = ss_output(f->session, (uint32_t)f->done_slot, f->stream, &out, NULL)) != SS_OK) return st;
    st = f->cuda ? ssvk_cuda_copy_out(f->cuda, f->stream, m, (uint64_t)(uintptr_t)out)
                 : ssvk_host_copy_out(f->host, m, out);
    if (st == SS_BUSY) return SS_OK; /* the previous composite still reads the output buffer */
    if (st != SS_OK) return st;
    /* stylized = m is signalled (host) or queued (CUDA): from here the composite must be submitted */
    cmd = f->out_cmd[m % RING];
    if ((rc = begin_cmd(cmd)) != VK_SUCCESS) return SS_SYSTEM_FAILED;
    ssvk_record_output(f->bridge, cmd, target, layout);
    if ((rc = vkEndCommandBuffer(cmd)) != VK_SUCCESS ||
        (rc = ssvk_submit_output(f->bridge, f->queue, cmd, m, VK_NULL_HANDLE)) != VK_SUCCESS) {
        ssvk_set_error("the composite's submit: %d", rc);
        return SS_SYSTEM_FAILED;
    }
    f->m = m;
    f->have_done = 0;
    count(&f->stats.composited, 1);
    store(&f->stats.last_composited_seq, f->done_seq);
    return SS_OK;
}

static ss_status send_frame(ssvk_frames *f, const ssvk_frame *frame) {
    ssvk_info *info = &f->bridge->info;
    VkCommandBuffer cmd;
    ss_slot slot;
    uint64_t n = f->n + 1;
    ss_status st;
    VkResult rc;
    if (f->pending || (n > RING && value_of(f, SSVK_RENDERED) < n - RING)) { /* the input buffer is still in use */
        count(&f->stats.busy, 1);
        return SS_OK;
    }
    st = ss_acquire(f->session, f->stream, &slot);
    if (st == SS_BUSY) {
        count(&f->stats.busy, 1);
        return SS_OK;
    }
    if (st != SS_OK) return st;
    cmd = f->in_cmd[n % RING];
    if ((rc = begin_cmd(cmd)) != VK_SUCCESS) return SS_SYSTEM_FAILED;
    for (uint32_t i = 0; i < info->plane_count; i++) ssvk_record_input(f->bridge, cmd, i, frame->planes[i], frame->planes_layout);
    if ((rc = vkEndCommandBuffer(cmd)) != VK_SUCCESS ||
        (rc = ssvk_submit_input(f->bridge, f->queue, cmd, n, VK_NULL_HANDLE)) != VK_SUCCESS) {
        ssvk_set_error("the input copy's submit: %d", rc);
        return SS_SYSTEM_FAILED;
    }
    f->n = n;
    if (f->cuda) {
        if ((st = ssvk_cuda_copy_in(f->cuda, f->stream, n, (uint64_t)(uintptr_t)slot.input)) != SS_OK) return st;
        send(f, &slot, frame->info);
        return SS_OK;
    }
    f->pending = 1;
    f->pending_n = n;
    f->pending_slot = slot;
    f->pending_has_info = frame->info != NULL;
    if (frame->info) f->pending_info = *frame->info;
    return finish_pending(f); /* a CPU device may be done already */
}

ss_status ssvk_frames_run(ssvk_frames *f, const ssvk_frame *frame) {
    ss_status st;
    if (!f || !frame || frame->size < sizeof *frame) {
        ssvk_set_error("ssvk_frames_run: a NULL or a short frame");
        return SS_INVALID_ARGUMENT;
    }
    count(&f->stats.runs, 1);
    if ((st = finish_pending(f)) != SS_OK) return st;
    take_events(f);
    if ((st = composite(f, frame->target, frame->target_layout)) != SS_OK) return st;
    if (frame->planes) return send_frame(f, frame);
    return SS_OK;
}

void ssvk_frames_get_stats(ssvk_frames *f, ssvk_frames_stats *out) {
    if (!f || !out || out->size < sizeof *out) return;
    pthread_mutex_lock(&f->note_lock);
    memcpy(out->last_code, f->stats.last_code, sizeof out->last_code);
    memcpy(out->last_message, f->stats.last_message, sizeof out->last_message);
    pthread_mutex_unlock(&f->note_lock);
    out->cuda = f->stats.cuda;
    out->live = __atomic_load_n(&f->stats.live, __ATOMIC_RELAXED);
#define LOAD(x) out->x = __atomic_load_n(&f->stats.x, __ATOMIC_RELAXED)
    LOAD(runs); LOAD(sent); LOAD(busy); LOAD(done); LOAD(late); LOAD(errors); LOAD(composited);
    LOAD(last_sent_seq); LOAD(last_done_seq); LOAD(last_composited_seq);
#undef LOAD
}

ss_status ssvk_frames_destroy(ssvk_frames *f, uint32_t timeout_ms) {
    VkSemaphore sems[2];
    uint64_t values[2];
    VkSemaphoreWaitInfo wi = {VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO, NULL, 0, 2, sems, values};
    VkResult rc;
    if (!f) return SS_INVALID_ARGUMENT;
    sems[0] = f->bridge->info.sems[SSVK_RENDERED];
    sems[1] = f->bridge->info.sems[SSVK_COMPOSITED];
    values[0] = f->n;
    values[1] = f->m;
    rc = vkWaitSemaphores(f->dev, &wi, (uint64_t)timeout_ms * 1000000u);
    free_all(f); /* the CUDA half synchronises its context before it frees */
    if (rc != VK_SUCCESS) {
        ssvk_set_error("the GPU had not finished the bridge's copies within %u ms (%d)", timeout_ms, rc);
        return SS_UNAVAILABLE;
    }
    return SS_OK;
}
