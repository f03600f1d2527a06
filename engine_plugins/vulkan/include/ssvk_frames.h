/* ssvk_frames.h: the per-frame driver every Vulkan engine plugin calls (Unity's native plugin and
 * Unreal's view extension call exactly these functions): one libstreamstyle session, the Vulkan
 * bridge on the engine's device, and its CUDA half (a cuda-ipc session) or its host half (a shm
 * session), driven once per engine frame from the render thread. docs/engines.md, "Any Vulkan
 * engine", is the guide.
 *
 * Per call of ssvk_frames_run (never waiting on the host, the GPU, the service or the I/O thread):
 *   1. the session's events are taken (do not call ss_poll on a session this drives; the counts
 *      and the last code are in ssvk_frames_stats);
 *   2. the newest stylized frame not yet composited is copied back (CUDA: after a stream wait on
 *      the service's `done`; host: once the previous composite has left the output buffer) and
 *      copied into the engine's target image by a submit that waits on the GPU for it;
 *   3. this frame's G-buffer images, if given, are copied into the bridge's buffer on the GPU and,
 *      when the session has a free slot, into the ring (CUDA: on the bridge's stream, behind a GPU
 *      wait; host: on a later call, once Vulkan has finished) and sent. When it cannot send (no free
 *      slot, the service reconnecting, the previous host copy still pending) the frame counts as
 *      busy: the engine shows its raw frame, as it does for every frame not composited.
 * Command buffers come from a pool of the driver's own on the engine's queue family; each is reused
 * only once the timeline semaphore its submit signals shows it has finished.
 */
#ifndef SSVK_FRAMES_H
#define SSVK_FRAMES_H

#include "ssvk.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ssvk_frames ssvk_frames;

typedef struct ssvk_frames_config {
    uint32_t size;                  /* sizeof(ssvk_frames_config) */
    ss_session *session;            /* open; the driver calls its frame path (not ss_poll for you) */
    const char *backend;            /* the session's: SS_BACKEND_SHM (NULL) or SS_BACKEND_CUDA_IPC */
    int32_t cuda_device;            /* cuda-ipc: the session's device */
    VkPhysicalDevice physical;      /* the engine's, its device made with SSVK_DEVICE_EXTENSIONS */
    VkDevice device;
    VkQueue queue;                  /* the copies and composites are submitted here */
    uint32_t queue_family;
    uint32_t width, height;         /* the session's */
    const ss_channel *channels;     /* the layout the session was opened with */
    uint32_t channel_count;
    uint64_t input_slot_bytes;
    const char *output_format;      /* the session's: SS_FORMAT_RGBA8 (NULL) or SS_FORMAT_RGBA16F */
} ssvk_frames_config;

typedef struct ssvk_frame {
    uint32_t size;                  /* sizeof(ssvk_frame) */
    const VkImage *planes;          /* one image per bridge plane (ssvk_frames_info), width x height in the
                                       plane's format; NULL: nothing is sent this frame */
    VkImageLayout planes_layout;    /* TRANSFER_SRC_OPTIMAL or GENERAL */
    VkImage target;                 /* the composite image (the output format); VK_NULL_HANDLE: none */
    VkImageLayout target_layout;    /* TRANSFER_DST_OPTIMAL or GENERAL */
    const ss_frame_info *info;      /* view, proj, jitter, dt, params; NULL: none */
} ssvk_frame;

typedef struct ssvk_frames_stats {
    uint32_t size;                  /* sizeof(ssvk_frames_stats) */
    int cuda;                       /* 1: the CUDA half moves the frames, 0: the host half */
    int live;                       /* the session is open on a service (0 while it reconnects) */
    uint64_t runs;                  /* ssvk_frames_run calls */
    uint64_t sent, busy;            /* frames sent; frames that could not be (the raw frame showed) */
    uint64_t done, late, errors;    /* the service's answers */
    uint64_t composited;            /* stylized frames copied into a target */
    uint64_t last_sent_seq, last_done_seq, last_composited_seq;
    char last_code[32];             /* the last late reason, error code or "unavailable" (service lost) */
    char last_message[224];
} ssvk_frames_stats;

/* Make the bridge, open its CUDA half (cuda-ipc) or host half (shm), the command pool. Not on the
 * render thread (allocations). SS_INVALID_ARGUMENT: a NULL, a size mismatch with the session;
 * SS_NO_CUDA / SS_CUDA_FAILED for the CUDA half; SS_SYSTEM_FAILED: a Vulkan call (ssvk_last_error). */
ss_status ssvk_frames_create(const ssvk_frames_config *config, ssvk_frames **out);
/* The bridge's planes and formats, which images ssvk_frame.planes must hold. */
void ssvk_frames_info(const ssvk_frames *frames, ssvk_info *out);
/* Once per engine frame, on the thread that may submit to the queue. SS_OK (whatever was sent or
 * composited: see the stats), or a failure of a Vulkan or CUDA call (ssvk_last_error). */
ss_status ssvk_frames_run(ssvk_frames *frames, const ssvk_frame *frame);
/* Any thread. */
void ssvk_frames_get_stats(ssvk_frames *frames, ssvk_frames_stats *out);
/* Wait (host side, up to timeout_ms) for the GPU work submitted so far, then free everything but the
 * session. Not on the render thread. SS_UNAVAILABLE if the GPU did not finish in time (freed anyway). */
ss_status ssvk_frames_destroy(ssvk_frames *frames, uint32_t timeout_ms);

#ifdef __cplusplus
}
#endif
#endif /* SSVK_FRAMES_H */
