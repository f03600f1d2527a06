/* plugin.c: StreamStyle's native rendering plugin for Unity on Vulkan (include/streamstyle_unity.h).
 *
 * Thin glue: Unity's interfaces (src/unity_abi.h) on one side, the shared per-frame driver
 * (ssvk_frames, over libstreamstyle and the Vulkan bridge) on the other. What the glue owns:
 *  - the device: at UnityPluginLoad it asks to intercept Vulkan's initialisation, and in Unity's
 *    vkCreateDevice adds the bridge's extensions the device has and the timelineSemaphore feature;
 *  - the event: its id (reserved from Unity), its configuration (outside a render pass, with access
 *    to the graphics queue), and the render-thread callback: AccessTexture for the planes and the
 *    target (Unity records the layout barriers), then AccessQueue with a flush, whose callback runs
 *    ssvk_frames_run on the queue once Unity has submitted those barriers;
 *  - attach/detach of a session opened by the C# side.
 * Threads: attach and detach run on Unity's main thread under `lock`; the render event and the
 * queue callback only ever try-lock it (a frame during an attach shows the raw frame), so the
 * render thread never waits. The queue callback's arguments live in a ring of CALLS records that the
 * render event fills: Unity runs the callbacks in order, never more than a frame behind. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "streamstyle_unity.h"
#include "unity_abi.h"

#define CALLS 16

/* the binary interface as documented (unity_abi.h): a wrong table fails the build */
_Static_assert(sizeof(IUnityGraphicsVulkanV2) == 16 * sizeof(void *), "IUnityGraphicsVulkanV2 has 16 entries");
_Static_assert(offsetof(IUnityGraphicsVulkanV2, AccessTexture) == 5 * sizeof(void *), "AccessTexture slot");
_Static_assert(offsetof(IUnityGraphicsVulkanV2, AccessQueue) == 11 * sizeof(void *), "AccessQueue slot");
_Static_assert(offsetof(IUnityGraphicsVulkanV2, AddInterceptInitialization) == 14 * sizeof(void *), "Add... slot");
_Static_assert(sizeof(void *) != 8 || sizeof(UnityVulkanImage) == 160, "UnityVulkanImage is 160 bytes");
_Static_assert(sizeof(void *) != 8 || offsetof(UnityVulkanImage, image) == 72, "UnityVulkanImage.image at 72");
_Static_assert(sizeof(void *) != 8 || sizeof(UnityVulkanInstance) == 120, "UnityVulkanInstance is 120 bytes");

typedef struct call {
    uint32_t flags;
    VkImage planes[SSVK_MAX_PLANES];
    VkImage target;
    int has_info;
    ss_frame_info info;
} call;

static struct {
    IUnityInterfaces *ifaces;
    IUnityGraphics *graphics;
    IUnityGraphicsVulkanV2 *vk;
    PFN_vkGetInstanceProcAddr next_gipa;    /* Unity's, handed to our interception */
    PFN_vkCreateDevice next_create_device;
    VkInstance instance;
    int event_id;
    int device_ready;
    int device_made_here;                   /* Unity's vkCreateDevice went through ssu_create_device */
    uint32_t extensions_added;
    pthread_mutex_t lock;                   /* attach/detach against the render thread */
    ssvk_frames *frames;
    ssvk_info info;
    uint32_t width, height;                 /* the attached session's */
    call calls[CALLS];
    unsigned next_call;
    pthread_mutex_t error_lock;
    char error[256];
} P = {.lock = PTHREAD_MUTEX_INITIALIZER, .error_lock = PTHREAD_MUTEX_INITIALIZER, .event_id = -1};

static void set_error(const char *fmt, ...) {
    va_list ap;
    pthread_mutex_lock(&P.error_lock);
    va_start(ap, fmt);
    vsnprintf(P.error, sizeof P.error, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&P.error_lock);
}

/* the render thread's errors: never waits for a reader */
static void note_error(const char *fmt, ...) {
    va_list ap;
    if (pthread_mutex_trylock(&P.error_lock) != 0) return;
    va_start(ap, fmt);
    vsnprintf(P.error, sizeof P.error, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&P.error_lock);
}

SSU_API const char *StreamStyleUnity_LastError(void) {
    static __thread char copy[256];
    pthread_mutex_lock(&P.error_lock);
    memcpy(copy, P.error, sizeof copy);
    pthread_mutex_unlock(&P.error_lock);
    return copy;
}

SSU_API int StreamStyleUnity_AbiVersion(void) { return SSU_ABI_VERSION; }
SSU_API int StreamStyleUnity_FrameEventId(void) { return P.event_id + SSU_EVENT_FRAME; }
SSU_API int StreamStyleUnity_DeviceReady(void) { return P.device_ready; }

/* ---- Unity's vkCreateDevice, with the bridge's extensions and timeline semaphores -------------- */

static int has_extension(const char *const *names, uint32_t n, const char *name) {
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return 1;
    return 0;
}

static VkResult VKAPI_CALL ssu_create_device(VkPhysicalDevice phys, const VkDeviceCreateInfo *ci,
                                             const VkAllocationCallbacks *alloc, VkDevice *out) {
    static const char *const wanted[] = {SSVK_DEVICE_EXTENSIONS};
    PFN_vkEnumerateDeviceExtensionProperties enumerate =
        (PFN_vkEnumerateDeviceExtensionProperties)P.next_gipa(P.instance, "vkEnumerateDeviceExtensionProperties");
    VkDeviceCreateInfo mine = *ci;
    const char *names[64];
    uint32_t n = 0, have_count = 0;
    VkExtensionProperties *have = NULL;
    VkPhysicalDeviceTimelineSemaphoreFeatures timeline = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_TIMELINE_SEMAPHORE_FEATURES};
    VkBool32 *feature = NULL, was = VK_FALSE;
    VkResult rc;
    if (ci->enabledExtensionCount + sizeof wanted / sizeof *wanted > sizeof names / sizeof *names)
        return P.next_create_device(phys, ci, alloc, out);
    for (uint32_t i = 0; i < ci->enabledExtensionCount; i++) names[n++] = ci->ppEnabledExtensionNames[i];
    if (enumerate && enumerate(phys, NULL, &have_count, NULL) == VK_SUCCESS &&
        (have = calloc(have_count ? have_count : 1, sizeof *have)) && enumerate(phys, NULL, &have_count, have) == VK_SUCCESS) {
        for (size_t k = 0; k < sizeof wanted / sizeof *wanted; k++) {
            int offered = 0;
            for (uint32_t j = 0; j < have_count; j++) offered |= strcmp(have[j].extensionName, wanted[k]) == 0;
            if (offered && !has_extension(names, n, wanted[k])) names[n++] = wanted[k];
        }
    }
    free(have);
    mine.enabledExtensionCount = n;
    mine.ppEnabledExtensionNames = names;
    /* timelineSemaphore: set in the caller's Vulkan 1.2 features (restored afterwards), or chained */
    for (VkBaseOutStructure *s = (VkBaseOutStructure *)(uintptr_t)ci->pNext; s; s = s->pNext) {
        if (s->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES)
            feature = &((VkPhysicalDeviceVulkan12Features *)s)->timelineSemaphore;
        else if (s->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_TIMELINE_SEMAPHORE_FEATURES)
            feature = &((VkPhysicalDeviceTimelineSemaphoreFeatures *)s)->timelineSemaphore;
    }
    if (feature) {
        was = *feature;
        *feature = VK_TRUE;
    } else {
        timeline.pNext = (void *)(uintptr_t)ci->pNext;
        timeline.timelineSemaphore = VK_TRUE;
        mine.pNext = &timeline;
    }
    rc = P.next_create_device(phys, &mine, alloc, out);
    if (feature) *feature = was;
    if (rc == VK_SUCCESS) {
        P.extensions_added = n - ci->enabledExtensionCount;
        P.device_made_here = 1;
        return rc;
    }
    set_error("Unity's vkCreateDevice failed with the bridge's extensions (%d): created without them", rc);
    P.extensions_added = 0;
    P.device_made_here = 0;
    return P.next_create_device(phys, ci, alloc, out);
}

static PFN_vkVoidFunction VKAPI_CALL ssu_get_instance_proc_addr(VkInstance instance, const char *name) {
    if (strcmp(name, "vkCreateDevice") == 0) {
        P.instance = instance;
        P.next_create_device = (PFN_vkCreateDevice)P.next_gipa(instance, name);
        return P.next_create_device ? (PFN_vkVoidFunction)ssu_create_device : NULL;
    }
    return P.next_gipa(instance, name);
}

static PFN_vkGetInstanceProcAddr UNITY_API intercept_init(PFN_vkGetInstanceProcAddr gipa, void *userdata) {
    (void)userdata;
    P.next_gipa = gipa;
    return ssu_get_instance_proc_addr;
}

/* ---- device events ----------------------------------------------------------------------------- */

static int detach(uint32_t timeout_ms) {
    int st = SS_OK;
    pthread_mutex_lock(&P.lock);
    if (P.frames) {
        st = ssvk_frames_destroy(P.frames, timeout_ms);
        if (st != SS_OK) set_error("detach: %s", ssvk_last_error());
        P.frames = NULL;
    }
    pthread_mutex_unlock(&P.lock);
    return st;
}

static void UNITY_API on_device_event(UnityGfxDeviceEventType type) {
    if (type == kUnityGfxDeviceEventInitialize) {
        UnityVulkanInstance inst;
        UnityVulkanPluginEventConfig cfg = {kUnityVulkanRenderPass_EnsureOutside, kUnityVulkanGraphicsQueueAccess_Allow,
                                            kUnityVulkanEventConfigFlag_ModifiesCommandBuffersState};
        if (!P.graphics || P.graphics->GetRenderer() != kUnityGfxRendererVulkan || !P.vk) {
            set_error("Unity is not rendering with Vulkan: StreamStyle's native plugin needs it");
            return;
        }
        inst = P.vk->Instance();
        if (!inst.device) return; /* UnityPluginLoad's call, before Unity made its device */
        if (!P.device_made_here || !vkGetDeviceProcAddr(inst.device, "vkGetMemoryFdKHR")) {
            set_error("Unity's Vulkan device was made without the bridge's extensions: set the plugin to load on "
                      "startup");
            return;
        }
        P.vk->ConfigureEvent(P.event_id + SSU_EVENT_FRAME, &cfg);
        P.device_ready = 1;
    } else if (type == kUnityGfxDeviceEventShutdown) {
        detach(2000);
        P.device_ready = 0;
    }
}

/* ---- Unity's entry points --------------------------------------------------------------------- */

UNITY_EXPORT void UNITY_API UnityPluginLoad(IUnityInterfaces *ifaces) {
    P.ifaces = ifaces;
    P.graphics = (IUnityGraphics *)ifaces->GetInterfaceSplit(SSU_GUID_IUNITYGRAPHICS);
    P.vk = (IUnityGraphicsVulkanV2 *)ifaces->GetInterfaceSplit(SSU_GUID_IUNITYGRAPHICSVULKANV2);
    if (!P.graphics) {
        set_error("Unity gave no IUnityGraphics");
        return;
    }
    P.event_id = P.graphics->ReserveEventIDRange(1);
    if (P.vk && !P.vk->AddInterceptInitialization(intercept_init, NULL, 0))
        set_error("Unity refused the Vulkan interception: the plugin was loaded after the device was made "
                  "(set it to load on startup)");
    P.graphics->RegisterDeviceEventCallback(on_device_event);
    on_device_event(kUnityGfxDeviceEventInitialize); /* a device that already exists */
}

UNITY_EXPORT void UNITY_API UnityPluginUnload(void) {
    detach(2000);
    if (P.graphics) P.graphics->UnregisterDeviceEventCallback(on_device_event);
    if (P.vk) P.vk->RemoveInterceptInitialization(intercept_init);
    P.device_ready = 0;
    P.graphics = NULL;
    P.vk = NULL;
}

/* ---- attach / detach (Unity's main thread) ---------------------------------------------------- */

SSU_API int StreamStyleUnity_Attach(const ssu_attach_config *cfg) {
    ssvk_frames_config fc = {sizeof fc};
    UnityVulkanInstance inst;
    int st;
    if (!cfg || cfg->size < sizeof *cfg || !cfg->session) {
        set_error("StreamStyleUnity_Attach: a NULL or a short config");
        return SS_INVALID_ARGUMENT;
    }
    if (!P.device_ready || !P.vk) {
        set_error("Unity's Vulkan device is not ready for StreamStyle (%s)", P.error[0] ? P.error : "no device yet");
        return SS_UNAVAILABLE;
    }
    pthread_mutex_lock(&P.lock);
    if (P.frames) {
        pthread_mutex_unlock(&P.lock);
        set_error("a session is attached already: detach it first");
        return SS_WRONG_STATE;
    }
    inst = P.vk->Instance();
    fc.session = cfg->session;
    fc.backend = cfg->backend;
    fc.cuda_device = cfg->cuda_device;
    fc.physical = inst.physicalDevice;
    fc.device = inst.device;
    fc.queue = inst.graphicsQueue;
    fc.queue_family = inst.queueFamilyIndex;
    fc.width = cfg->width;
    fc.height = cfg->height;
    fc.channels = cfg->channels;
    fc.channel_count = cfg->channel_count;
    fc.input_slot_bytes = cfg->input_slot_bytes;
    fc.output_format = cfg->output_format;
    st = ssvk_frames_create(&fc, &P.frames);
    if (st == SS_OK) {
        ssvk_frames_info(P.frames, &P.info);
        P.width = cfg->width;
        P.height = cfg->height;
    }
    else set_error("attach: %s", ssvk_last_error());
    pthread_mutex_unlock(&P.lock);
    return st;
}

SSU_API int StreamStyleUnity_Detach(uint32_t timeout_ms) { return detach(timeout_ms); }

SSU_API int StreamStyleUnity_GetPlanes(ssu_plane *out, uint32_t capacity, uint32_t *count) {
    int st = SS_OK;
    if (!out || !count) return SS_INVALID_ARGUMENT;
    pthread_mutex_lock(&P.lock);
    if (!P.frames) {
        st = SS_WRONG_STATE;
        set_error("no session is attached");
    } else {
        *count = P.info.plane_count;
        for (uint32_t i = 0; i < P.info.plane_count && i < capacity; i++) {
            snprintf(out[i].channel, sizeof out[i].channel, "%s", P.info.planes[i].channel);
            snprintf(out[i].format, sizeof out[i].format, "%s", P.info.planes[i].format->name);
            out[i].vk_format = (uint32_t)P.info.planes[i].format->vk;
        }
    }
    pthread_mutex_unlock(&P.lock);
    return st;
}

SSU_API int StreamStyleUnity_GetStats(ssvk_frames_stats *out) {
    int st = SS_OK;
    if (!out || out->size < sizeof *out) return SS_INVALID_ARGUMENT;
    pthread_mutex_lock(&P.lock);
    if (P.frames) ssvk_frames_get_stats(P.frames, out);
    else st = SS_WRONG_STATE;
    pthread_mutex_unlock(&P.lock);
    return st;
}

/* ---- the render thread ------------------------------------------------------------------------ */

/* Unity's queue, after it submitted what it recorded before AccessQueue (the barriers) */
static void UNITY_API on_queue(int event_id, void *data) {
    call *c = data;
    ssvk_frame fr = {sizeof fr};
    int st;
    (void)event_id;
    if (pthread_mutex_trylock(&P.lock) != 0) return;
    if (P.frames) {
        fr.planes = (c->flags & SSU_FRAME_SEND) ? c->planes : NULL;
        fr.planes_layout = VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL;
        fr.target = (c->flags & SSU_FRAME_COMPOSITE) ? c->target : VK_NULL_HANDLE;
        fr.target_layout = VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL;
        fr.info = c->has_info ? &c->info : NULL;
        if ((st = ssvk_frames_run(P.frames, &fr)) != SS_OK) note_error("frame: %s (%d)", ssvk_last_error(), st);
    }
    pthread_mutex_unlock(&P.lock);
}

static int access(void *texture, VkImageLayout layout, VkAccessFlags access_flags, VkFormat format, VkImage *out) {
    UnityVulkanImage img;
    memset(&img, 0, sizeof img);
    if (!texture || !P.vk->AccessTexture(texture, NULL, layout, VK_PIPELINE_STAGE_TRANSFER_BIT, access_flags,
                                         kUnityVulkanResourceAccess_PipelineBarrier, &img)) {
        note_error("AccessTexture refused a texture (%p)", texture);
        return 0;
    }
    if (img.format != format || img.extent.width != P.width || img.extent.height != P.height) {
        note_error("a texture is format %d, %ux%u; the plugin needs format %d, %ux%u", img.format, img.extent.width,
                   img.extent.height, format, P.width, P.height);
        return 0;
    }
    *out = img.image;
    return 1;
}

static void UNITY_API on_render_event(int event_id, void *data) {
    const ssu_frame_data *d = data;
    call *c;
    int ok = 1;
    if (event_id != P.event_id + SSU_EVENT_FRAME || !d || d->size < sizeof *d || !P.vk) return;
    if (pthread_mutex_trylock(&P.lock) != 0) return; /* attaching or detaching: the raw frame */
    if (!P.frames) {
        pthread_mutex_unlock(&P.lock);
        return;
    }
    c = &P.calls[P.next_call++ % CALLS];
    memset(c, 0, sizeof *c);
    c->flags = d->flags;
    if (d->flags & SSU_FRAME_SEND)
        for (uint32_t i = 0; i < P.info.plane_count && ok; i++)
            ok = access(d->planes[i], VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, VK_ACCESS_TRANSFER_READ_BIT,
                        P.info.planes[i].format->vk, &c->planes[i]);
    if (!ok) c->flags &= ~(uint32_t)SSU_FRAME_SEND;
    if ((d->flags & SSU_FRAME_COMPOSITE) &&
        !access(d->target, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, VK_ACCESS_TRANSFER_WRITE_BIT, P.info.output_format,
                &c->target))
        c->flags &= ~(uint32_t)SSU_FRAME_COMPOSITE;
    if (d->info.size == sizeof d->info) {
        c->has_info = 1;
        c->info = d->info;
    }
    pthread_mutex_unlock(&P.lock);
    P.vk->AccessQueue(on_queue, event_id, c, true);
}

SSU_API ssu_render_event StreamStyleUnity_GetRenderEventFunc(void) { return on_render_event; }
