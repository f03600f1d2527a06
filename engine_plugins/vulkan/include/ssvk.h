/* ssvk.h: the Vulkan bridge, the GPU half every Vulkan engine plugin shares (docs/engines.md, "The
 * Vulkan bridge"). It sits between the engine's renderer and libstreamstyle's cuda-ipc ring:
 *
 *   engine images --(Vulkan copy, this file)--> exportable input buffer --(one CUDA copy)--> ring slot
 *   ring output slot --(CUDA copy)--> exportable output buffer --(Vulkan copy, this file)--> engine image
 *
 * Vulkan half (ssvk_create ...): on the engine's VkDevice it allocates two exportable buffers
 * (VK_KHR_external_memory_fd, opaque fd, dedicated allocations): the input buffer holds one plane per
 * distinct offset of the session's layout (channels that share an offset share a plane, as roughness
 * and metallic do). A plane lies in it at its slot offset and row pitch (the buffer mirrors the slot,
 * so one copy moves every such plane into the ring) unless Vulkan cannot copy an image there (an
 * offset not a multiple of the texel size and of 4, a pitch not a whole number of texels): such a
 * plane goes after the mirrored span, rows padded to SSVK_ROW_ALIGN, and is copied on its own. The
 * output buffer holds one output frame.
 * It also makes four timeline semaphores (all start at 0), exportable as opaque fds when the device
 * can (VK_KHR_external_semaphore_fd), one per event so that frames may overlap (the engine submits
 * frame n+1 before frame n's output is back):
 *   rendered   Vulkan signals n: the n-th input copy is in the input buffer         (CUDA waits)
 *   consumed   CUDA signals n: the n-th input copy left the input buffer           (Vulkan waits before n+1)
 *   stylized   CUDA signals m: the m-th output is in the output buffer             (Vulkan waits)
 *   composited Vulkan signals m: the m-th output left the output buffer            (CUDA waits before m+1)
 * n counts input copies and m output copies, from 1; the submit helpers and the CUDA copies below put
 * in every wait and signal, so the engine only counts.
 *
 * CUDA half (ssvk_cuda_open ...): the CUDA driver is opened with dlopen on first use (the bridge loads
 * and its Vulkan half works without CUDA). It imports both buffers and both semaphores into a CUDA
 * context of this process, and on a stream: waits on `rendered`, copies the mirrored span into the
 * ring's input slot in one copy and any other plane with a 2D copy (ssvk_cuda_copy_in), and after
 * libstreamstyle's ss_output made the stream wait on `done`, copies the output slot out and signals
 * `stylized` (ssvk_cuda_copy_out). Nothing here waits on the GPU from the host.
 *
 * Rules: every call returns a status (VkResult for the Vulkan half, ss_status for the CUDA half) and
 * nothing prints; ssvk_last_error() says what failed, per thread. Frame-path calls (ssvk_record_*,
 * ssvk_cuda_copy_*) are for the render thread and only record or enqueue GPU work. */
#ifndef SSVK_H
#define SSVK_H

#include <stdint.h>
#include <vulkan/vulkan.h>

#include "streamstyle.h" /* ss_channel, ss_status (types only; the bridge does not link libstreamstyle) */

#ifdef __cplusplus
extern "C" {
#endif

#define SSVK_ROW_ALIGN 256u /* row pitch of the planes that cannot mirror the slot */
#define SSVK_MAX_PLANES 8u

/* Device extensions the engine must enable when it creates its VkDevice (Vulkan 1.2 or later, with
 * the timelineSemaphore feature). The semaphore-fd one is needed only for the CUDA half; the bridge
 * checks it at ssvk_create when `require_semaphore_export` is set. */
#define SSVK_DEVICE_EXTENSIONS "VK_KHR_external_memory", "VK_KHR_external_memory_fd", "VK_KHR_external_semaphore", \
                               "VK_KHR_external_semaphore_fd", "VK_KHR_dedicated_allocation"

/* A contract format (docs/gbuffer-layout.md) as Vulkan sees it; NULL for an unknown name. */
typedef struct ssvk_format {
    const char *name;       /* "rgba16f" */
    VkFormat vk;            /* VK_FORMAT_R16G16B16A16_SFLOAT */
    uint32_t pixel_bytes;   /* 8 */
} ssvk_format;
const ssvk_format *ssvk_format_find(const char *name);
const ssvk_format *ssvk_format_table(uint32_t *count); /* every format, for tests against the contract */

/* One plane: where it lies in the exportable input buffer and in the ring's input slot. */
typedef struct ssvk_plane {
    const ssvk_format *format;
    const char *channel;    /* the first channel of the session's layout that reads this plane */
    uint64_t offset;        /* in the input buffer: slot_offset when mirrored */
    uint32_t row_pitch;     /* in the input buffer: slot_pitch when mirrored, else width * pixel_bytes
                               rounded up to SSVK_ROW_ALIGN */
    uint64_t slot_offset;   /* in the ring's input slot: the layout's channel offset */
    uint32_t slot_pitch;    /* the layout's row_pitch, or width * pixel_bytes */
    int mirrored;           /* 1: it lies in the buffer as in the slot and moves with the span's copy */
} ssvk_plane;

typedef struct ssvk_config {
    uint32_t size;                  /* sizeof(ssvk_config) */
    VkPhysicalDevice physical;
    VkDevice device;                /* created with SSVK_DEVICE_EXTENSIONS and timelineSemaphore */
    uint32_t width, height;
    const ss_channel *channels;     /* the layout the session was (or will be) opened with */
    uint32_t channel_count;
    uint64_t input_slot_bytes;      /* the session's input slot size: every plane must fit */
    const char *output_format;      /* SS_FORMAT_RGBA8 (NULL) or SS_FORMAT_RGBA16F */
    int require_semaphore_export;   /* 1: fail unless both semaphores export as opaque fds (CUDA needs it) */
    int host_access;                /* 1: the buffers in host-visible memory, for the host half (below) */
} ssvk_config;

typedef struct ssvk_bridge ssvk_bridge;

typedef enum ssvk_semaphore { SSVK_RENDERED = 0, SSVK_CONSUMED = 1, SSVK_STYLIZED = 2, SSVK_COMPOSITED = 3 } ssvk_semaphore;
#define SSVK_SEMAPHORES 4

typedef struct ssvk_info {
    uint32_t plane_count;
    ssvk_plane planes[SSVK_MAX_PLANES];
    uint64_t span_offset, span_bytes;           /* the mirrored planes' span, in the buffer and the slot */
    uint32_t copy_count;                        /* copies per frame into the slot: the span's + 1 per other plane */
    VkBuffer input, output;
    VkDeviceMemory input_memory, output_memory;
    uint64_t input_bytes, output_bytes;         /* the allocations' sizes (what CUDA must import) */
    uint64_t output_frame_bytes;                /* width * height * the output format's pixel bytes */
    VkFormat output_format;
    VkSemaphore sems[SSVK_SEMAPHORES];          /* timeline semaphores, indexed by ssvk_semaphore */
    int semaphores_exportable;
} ssvk_info;

const char *ssvk_last_error(void);

/* Make the buffers and semaphores. VK_ERROR_FORMAT_NOT_SUPPORTED: a channel's format is unknown;
 * VK_ERROR_INITIALIZATION_FAILED: a plane does not fit the slot or overlaps another; VK_ERROR_EXTENSION_NOT_PRESENT: the
 * device cannot export what it must. Nothing stays allocated after a failure. */
VkResult ssvk_create(const ssvk_config *config, ssvk_bridge **out);
void ssvk_destroy(ssvk_bridge *bridge); /* the caller made sure the GPU no longer uses it */
void ssvk_get_info(const ssvk_bridge *bridge, ssvk_info *out);

/* New opaque fds (the caller owns them; CUDA's import takes ownership of what it imports). */
VkResult ssvk_export_memory(ssvk_bridge *bridge, int output, int *fd);     /* output 0: input buffer */
VkResult ssvk_export_semaphore(ssvk_bridge *bridge, ssvk_semaphore which, int *fd);

/* Record the copy of the engine image holding plane `plane` (in `layout`, TRANSFER_SRC_OPTIMAL or
 * GENERAL; width x height, the plane's format) into the input buffer, and the barrier that orders it
 * before the queue's semaphore signal. Submit it with ssvk_submit_input, or put that call's wait and
 * signal into the engine's own vkQueueSubmit. */
void ssvk_record_input(ssvk_bridge *bridge, VkCommandBuffer cmd, uint32_t plane, VkImage image, VkImageLayout layout);
/* Record the copy of the output buffer into the engine's composite image (`layout`: TRANSFER_DST_OPTIMAL
 * or GENERAL; width x height, info.output_format). Submit it with ssvk_submit_output. */
void ssvk_record_output(ssvk_bridge *bridge, VkCommandBuffer cmd, VkImage image, VkImageLayout layout);

/* vkQueueSubmit of the n-th input copy: waits on the GPU (transfer stage) for consumed >= n - 1, then
 * signals rendered = n. `fence` may be VK_NULL_HANDLE. */
VkResult ssvk_submit_input(ssvk_bridge *bridge, VkQueue queue, VkCommandBuffer cmd, uint64_t n, VkFence fence);
/* vkQueueSubmit of the m-th composite copy: waits on the GPU for stylized >= m, then signals
 * composited = m. */
VkResult ssvk_submit_output(ssvk_bridge *bridge, VkQueue queue, VkCommandBuffer cmd, uint64_t m, VkFence fence);

/* A buffer bound to memory imported from an opaque fd of `alloc_size` bytes (Vulkan owns the fd
 * afterwards): how a second importer (a test, or another process) sees what the bridge exported. */
VkResult ssvk_import_buffer(VkPhysicalDevice physical, VkDevice device, int fd, uint64_t alloc_size, VkBuffer *buffer,
                            VkDeviceMemory *memory);

/* ---- the host half ---------------------------------------------------------------------------- */

/* Where there is no CUDA (a shm session: a machine without an NVIDIA GPU, lavapipe in CI), the same
 * buffers and semaphores serve a copy by the CPU, still without any host wait: the two calls below
 * look at a timeline semaphore's value (vkGetSemaphoreCounterValue) and answer SS_BUSY when Vulkan
 * is not there yet; the caller tries again on its next frame. They signal from the host
 * (vkSignalSemaphore). The bridge must be created with host_access. For tests and CPU machines: a
 * 1080p frame is ~70 MB of memcpy on the render thread, which is no GPU machine's path. */
typedef struct ssvk_host ssvk_host;

/* Map both buffers. SS_INVALID_ARGUMENT: the bridge's memory is not host-visible (create it with
 * host_access) or the device lacks timeline semaphores' host calls. */
ss_status ssvk_host_open(ssvk_bridge *bridge, ssvk_host **out);
void ssvk_host_close(ssvk_host *host);

/* If rendered >= n: copy the planes into the input slot at `slot` (a host pointer: ss_slot.input of
 * a shm session; the span in one memcpy, as CUDA does), signal consumed = n, SS_OK. Else SS_BUSY:
 * Vulkan has not finished the n-th input copy; nothing was done. */
ss_status ssvk_host_copy_in(ssvk_host *host, uint64_t n, void *slot);
/* If composited >= m - 1: copy the output frame at `output` (ss_output's host pointer) into the
 * output buffer, signal stylized = m, SS_OK. Else SS_BUSY: the (m-1)-th composite still reads it. */
ss_status ssvk_host_copy_out(ssvk_host *host, uint64_t m, const void *output);

/* ---- the CUDA half --------------------------------------------------------------------------- */

typedef struct ssvk_cuda ssvk_cuda;

/* Import the bridge's buffers and semaphores into CUDA: into the context current on this thread, or
 * else `device`'s primary context (the CUDA runtime's, and libstreamstyle's cuda-ipc ring's). Use the
 * same device the VkDevice runs on. SS_NO_CUDA without a driver; SS_CUDA_FAILED names the call. */
ss_status ssvk_cuda_open(ssvk_bridge *bridge, int32_t device, ssvk_cuda **out);
void ssvk_cuda_close(ssvk_cuda *cuda); /* synchronises the context, then frees what it imported */

/* The imported buffers as device pointers (CUdeviceptr) in the bridge's context. */
ss_status ssvk_cuda_pointers(ssvk_cuda *cuda, uint64_t *input, uint64_t *output);
/* A non-blocking stream of the bridge's context, made at open, for callers without one of their own
 * (ssvk_frames uses it). */
void *ssvk_cuda_stream(ssvk_cuda *cuda);

/* On `stream` (a CUstream of the bridge's context; NULL: the legacy default stream): wait for
 * rendered >= n, copy the planes into the input slot at `slot` (a device pointer: ss_slot.input of a
 * cuda-ipc session, acquired on the same stream; info.copy_count copies, one for the reference
 * layout), signal consumed = n. Follow with ss_submit on the same stream, which records `ready`
 * after the copies. */
ss_status ssvk_cuda_copy_in(ssvk_cuda *cuda, void *stream, uint64_t n, uint64_t slot);
/* On `stream`, after ss_output made it wait on the slot's `done`: wait for composited >= m - 1, copy
 * the output slot at `output` (info.output_frame_bytes) into the output buffer, signal stylized = m. */
ss_status ssvk_cuda_copy_out(ssvk_cuda *cuda, void *stream, uint64_t m, uint64_t output);

#ifdef __cplusplus
}
#endif
#endif /* SSVK_H */
