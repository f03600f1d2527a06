/* streamstyle_unity.h: StreamStyle's native rendering plugin for Unity on Vulkan (libStreamStyleUnity),
 * what the C# side (Runtime/StreamStyleUnityNative.cs) calls. docs/engines.md, "Unity", is the guide.
 *
 * Unity loads the plugin at start-up (it must be set to load on startup, so that UnityPluginLoad
 * runs before Unity creates its Vulkan device): the plugin asks IUnityGraphicsVulkanV2 to intercept
 * Vulkan's initialisation and adds the bridge's device extensions (SSVK_DEVICE_EXTENSIONS, those the
 * device has) and the timelineSemaphore feature to Unity's vkCreateDevice.
 *
 * The C# side opens the session with libstreamstyle (StreamStyleClient/StreamStyleSession: control
 * calls, off the render thread), then hands it to the plugin with StreamStyleUnity_Attach (again off
 * the render thread: it makes the bridge on Unity's device). Each frame its command buffer issues
 *   CommandBuffer.IssuePluginEventAndData(StreamStyleUnity_GetRenderEventFunc(),
 *                                        StreamStyleUnity_FrameEventId(), frameData)
 * after the G-buffer planes are packed into RenderTextures of the plugin's plane formats. On the
 * render thread the plugin takes the textures' images (AccessTexture, with the barriers Unity
 * records), asks for the graphics queue (AccessQueue, after Unity flushed those barriers) and there
 * runs the shared per-frame driver (engine_plugins/vulkan/include/ssvk_frames.h): the newest
 * stylized frame is copied into the target RenderTexture behind a GPU-side wait, and this frame's
 * planes are sent when a slot is free. Nothing waits on the host. The C# side shows the target
 * while the stats say it is recent, and the raw frame otherwise.
 *
 * Every call returns an ss_status (0: ok); StreamStyleUnity_LastError says what failed. */
#ifndef STREAMSTYLE_UNITY_H
#define STREAMSTYLE_UNITY_H

#include <stdint.h>

#include "ssvk_frames.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SSU_API __declspec(dllexport)
#else
#define SSU_API __attribute__((visibility("default")))
#endif

#define SSU_ABI_VERSION 1

/* Unity's UnityRenderingEventAndData: what CommandBuffer.IssuePluginEventAndData calls */
typedef void (*ssu_render_event)(int event_id, void *data);
#define SSU_EVENT_FRAME 0 /* the only event, at StreamStyleUnity_FrameEventId() */

enum {
    SSU_FRAME_SEND = 1,      /* send this frame's planes (else only composite) */
    SSU_FRAME_COMPOSITE = 2  /* copy the newest stylized frame into `target` */
};

/* What C# passes with the render event; C# keeps it pinned until the event has run (the plugin
 * copies what it needs on the render thread). */
typedef struct ssu_frame_data {
    uint32_t size;                      /* sizeof(ssu_frame_data) */
    uint32_t flags;                     /* SSU_FRAME_* */
    void *planes[SSVK_MAX_PLANES];      /* Texture.GetNativeTexturePtr() of the plugin's planes, in order */
    void *target;                       /* the composite RenderTexture's native pointer */
    ss_frame_info info;                 /* view, proj, jitter, dt, per-frame params (info.size set) */
} ssu_frame_data;

/* One plane the C# side must render: its channel (the layout's first at that offset) and format. */
typedef struct ssu_plane {
    char channel[32];
    char format[16];                    /* a contract format, e.g. "rgba16f" */
    uint32_t vk_format;                 /* its VkFormat, e.g. 97 (R16G16B16A16_SFLOAT) */
} ssu_plane;

typedef struct ssu_attach_config {
    uint32_t size;                      /* sizeof(ssu_attach_config) */
    void *session;                      /* an ss_session*, opened with the layout below */
    const char *backend;                /* the session's: SS_BACKEND_SHM (NULL) or SS_BACKEND_CUDA_IPC */
    int32_t cuda_device;
    uint32_t width, height;
    const ss_channel *channels;
    uint32_t channel_count;
    uint64_t input_slot_bytes;
    const char *output_format;          /* NULL: rgba8 */
} ssu_attach_config;

SSU_API int StreamStyleUnity_AbiVersion(void);
SSU_API ssu_render_event StreamStyleUnity_GetRenderEventFunc(void);
SSU_API int StreamStyleUnity_FrameEventId(void);
/* 1 once Unity's Vulkan device exists and has the bridge's extensions; 0 before, or on another API. */
SSU_API int StreamStyleUnity_DeviceReady(void);
SSU_API int StreamStyleUnity_Attach(const ssu_attach_config *config);
/* The planes of the attached session, in the order ssu_frame_data.planes takes them. */
SSU_API int StreamStyleUnity_GetPlanes(ssu_plane *out, uint32_t capacity, uint32_t *count);
SSU_API int StreamStyleUnity_GetStats(ssvk_frames_stats *out);
/* Off the render thread; waits up to timeout_ms for the GPU to finish the plugin's copies. */
SSU_API int StreamStyleUnity_Detach(uint32_t timeout_ms);
SSU_API const char *StreamStyleUnity_LastError(void);

#ifdef __cplusplus
}
#endif
#endif /* STREAMSTYLE_UNITY_H */
