/* unity_host: plays Unity for libStreamStyleUnity, over a real Vulkan device (lavapipe in CI) and the
 * real service (tests/test_unity_plugin.py drives it).
 *
 *   unity_host PLUGIN ADDRESS DIR FRAMES WIDTH HEIGHT
 *
 * What Unity does, done here: IUnityInterfaces, IUnityGraphics and IUnityGraphicsVulkanV2 (src/unity_abi.h)
 * implemented over this process's Vulkan instance and device; the plugin loaded with dlopen and
 * UnityPluginLoad called before the device exists; Vulkan initialised through the plugin's
 * interception (Unity's own vkCreateDevice asks for no extension: the plugin must add them); the
 * device event sent; "textures" (optimal-tiling images whose native pointer is a struct of ours) whose
 * layouts AccessTexture tracks, recording its barriers into the current command buffer, which
 * AccessQueue flushes before calling back. What the C# side does, done here: the session opened with
 * libstreamstyle (shm, the reference layout, seed 11), attached, and per frame the G-buffer planes
 * "rendered" (uploaded) into the plugin's plane textures and the render event issued; it then keeps
 * issuing composite-only events, as later frames would, until this frame's stylized output is
 * composited, and reads the target back. DIR gets in<i>.bin (the slot the layout says those planes
 * make) and out<i>.bin (the composite), which the test compares with the Python client's outputs for
 * the same inputs and seed. Also checked: the device's extensions and timeline feature, the event's
 * configuration, refusals (attach twice, a texture of the wrong format), detach and unload.
 * Prints "CHECK name ok ...", "TIMING ...", "STATS ...", then "RESULT ok"; exits 1 on a failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "streamstyle.h"
#include "streamstyle_unity.h"
#include "unity_abi.h"

#define DIE(...) do { printf("FAIL " __VA_ARGS__); printf("\n"); fflush(stdout); exit(1); } while (0)
#define VK(call) do { VkResult r_ = (call); if (r_ != VK_SUCCESS) DIE("%s -> %d", #call, r_); } while (0)

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

/* ---- "Unity": its Vulkan objects and its interfaces --------------------------------------------- */

static VkInstance inst;
static VkPhysicalDevice phys;
static VkDevice dev;
static VkQueue queue;
static uint32_t queue_family;
static VkCommandPool pool;
static VkCommandBuffer cur;            /* the command buffer Unity is recording */
static VkCommandBuffer done_cmds[256];
static unsigned n_done;

static IUnityGraphicsDeviceEventCallback device_cb;
static UnityVulkanInitCallback intercept;
static void *intercept_ud;
static int configured_event = -1;
static UnityVulkanPluginEventConfig configured;
static int reserved;
static unsigned access_texture_calls, access_queue_calls;
static double queue_cb_us[4096], flush_us; /* the plugin's queue callback; Unity's own flush in the event */
static unsigned n_queue_cb;

typedef struct texture {              /* what a native texture pointer points at, for this "Unity" */
    VkImage image;
    VkDeviceMemory mem;
    VkFormat format;
    VkImageLayout layout;
    VkAccessFlags access;
} texture;

static uint32_t W, H;

static void begin_cur(void) {
    VkCommandBufferAllocateInfo ai = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, NULL, pool,
                                      VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1};
    VkCommandBufferBeginInfo bi = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, NULL,
                                   VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VK(vkAllocateCommandBuffers(dev, &ai, &cur));
    VK(vkBeginCommandBuffer(cur, &bi));
}

/* Unity submitting what it recorded; `fence` for the host's own readbacks only */
static void submit_cur(VkFence fence) {
    VkSubmitInfo si = {VK_STRUCTURE_TYPE_SUBMIT_INFO};
    VK(vkEndCommandBuffer(cur));
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cur;
    VK(vkQueueSubmit(queue, 1, &si, fence));
    if (n_done == sizeof done_cmds / sizeof *done_cmds) { /* free the old ones once the queue is idle */
        VK(vkQueueWaitIdle(queue));
        vkFreeCommandBuffers(dev, pool, n_done, done_cmds);
        n_done = 0;
    }
    done_cmds[n_done++] = cur;
    begin_cur();
}

static void barrier(texture *t, VkImageLayout layout, VkAccessFlags access) {
    VkImageMemoryBarrier b = {VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER};
    b.srcAccessMask = t->access;
    b.dstAccessMask = access;
    b.oldLayout = t->layout;
    b.newLayout = layout;
    b.srcQueueFamilyIndex = b.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
    b.image = t->image;
    b.subresourceRange.aspectMask = VK_IMAGE_ASPECT_COLOR_BIT;
    b.subresourceRange.levelCount = b.subresourceRange.layerCount = 1;
    vkCmdPipelineBarrier(cur, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, 0, 0, NULL, 0, NULL,
                         1, &b);
    t->layout = layout;
    t->access = access;
}

static int UNITY_API u_get_renderer(void) { return kUnityGfxRendererVulkan; }
static void UNITY_API u_register(IUnityGraphicsDeviceEventCallback cb) { device_cb = cb; }
static void UNITY_API u_unregister(IUnityGraphicsDeviceEventCallback cb) { if (cb == device_cb) device_cb = NULL; }
static int UNITY_API u_reserve(int count) {
    int base = 1000 + reserved;
    reserved += count;
    return base;
}
static IUnityGraphics u_graphics = {u_get_renderer, u_register, u_unregister, u_reserve};

static bool UNITY_API u_intercept_v1(UnityVulkanInitCallback f, void *ud) {
    intercept = f;
    intercept_ud = ud;
    return true;
}
static bool UNITY_API u_add_intercept(UnityVulkanInitCallback f, void *ud, int priority) {
    (void)priority;
    if (dev) return false; /* as Unity: too late once the device exists */
    intercept = f;
    intercept_ud = ud;
    return true;
}
static bool UNITY_API u_remove_intercept(UnityVulkanInitCallback f) {
    if (f != intercept) return false;
    intercept = NULL;
    return true;
}
static void UNITY_API u_configure_event(int id, const UnityVulkanPluginEventConfig *cfg) {
    configured_event = id;
    configured = *cfg;
}
static UnityVulkanInstance UNITY_API u_instance(void) {
    UnityVulkanInstance i;
    memset(&i, 0, sizeof i);
    i.instance = inst;
    i.physicalDevice = phys;
    i.device = dev;
    i.graphicsQueue = queue;
    i.getInstanceProcAddr = vkGetInstanceProcAddr;
    i.queueFamilyIndex = queue_family;
    return i;
}
static bool UNITY_API u_access_texture(void *native, const VkImageSubresource *sub, VkImageLayout layout,
                                       VkPipelineStageFlags stage, VkAccessFlags access, UnityVulkanResourceAccessMode mode,
                                       UnityVulkanImage *out) {
    texture *t = native;
    (void)stage;
    access_texture_calls++;
    if (!t || sub != NULL) return false; /* the plugin asks for whole images */
    if (mode == kUnityVulkanResourceAccess_PipelineBarrier && (t->layout != layout || t->access != access))
        barrier(t, layout, access);
    memset(out, 0, sizeof *out);
    out->image = t->image;
    out->layout = t->layout;
    out->aspect = VK_IMAGE_ASPECT_COLOR_BIT;
    out->format = t->format;
    out->extent.width = W;
    out->extent.height = H;
    out->extent.depth = 1;
    out->tiling = VK_IMAGE_TILING_OPTIMAL;
    out->type = VK_IMAGE_TYPE_2D;
    out->samples = VK_SAMPLE_COUNT_1_BIT;
    out->layers = out->mipCount = 1;
    return true;
}
static void UNITY_API u_ensure_outside(void) {}
static void UNITY_API u_access_queue(UnityRenderingEventAndData cb, int id, void *ud, bool flush) {
    double t0;
    access_queue_calls++;
    t0 = now_us();
    if (flush) submit_cur(VK_NULL_HANDLE);
    flush_us += now_us() - t0;
    t0 = now_us();
    cb(id, ud);
    if (n_queue_cb < sizeof queue_cb_us / sizeof *queue_cb_us) queue_cb_us[n_queue_cb++] = now_us() - t0;
}
static IUnityGraphicsVulkanV2 u_vulkan = {
    .InterceptInitialization = u_intercept_v1, .ConfigureEvent = u_configure_event, .Instance = u_instance,
    .AccessTexture = u_access_texture, .EnsureOutsideRenderPass = u_ensure_outside, .AccessQueue = u_access_queue,
    .AddInterceptInitialization = u_add_intercept, .RemoveInterceptInitialization = u_remove_intercept};

static IUnityInterface *UNITY_API u_get_split(unsigned long long high, unsigned long long low) {
    static const unsigned long long g[2][2] = {{SSU_GUID_IUNITYGRAPHICS}, {SSU_GUID_IUNITYGRAPHICSVULKANV2}};
    if (high == g[0][0] && low == g[0][1]) return (IUnityInterface *)(void *)&u_graphics;
    if (high == g[1][0] && low == g[1][1]) return (IUnityInterface *)(void *)&u_vulkan;
    return NULL;
}
static IUnityInterfaces u_ifaces = {NULL, NULL, u_get_split, NULL};

/* ---- Unity's device creation, through whatever the plugin's interception returns -------------- */

static const char *created_exts[64];
static uint32_t n_created_exts;
static int created_timeline;

static VkResult VKAPI_CALL recording_create_device(VkPhysicalDevice p, const VkDeviceCreateInfo *ci,
                                                   const VkAllocationCallbacks *a, VkDevice *out) {
    static char names[64][VK_MAX_EXTENSION_NAME_SIZE];
    n_created_exts = ci->enabledExtensionCount < 64 ? ci->enabledExtensionCount : 64;
    for (uint32_t i = 0; i < n_created_exts; i++) {
        snprintf(names[i], sizeof names[i], "%s", ci->ppEnabledExtensionNames[i]);
        created_exts[i] = names[i];
    }
    for (const VkBaseInStructure *s = ci->pNext; s; s = s->pNext) {
        if (s->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_TIMELINE_SEMAPHORE_FEATURES)
            created_timeline |= ((const VkPhysicalDeviceTimelineSemaphoreFeatures *)(const void *)s)->timelineSemaphore;
        if (s->sType == VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES)
            created_timeline |= ((const VkPhysicalDeviceVulkan12Features *)(const void *)s)->timelineSemaphore;
    }
    return vkCreateDevice(p, ci, a, out);
}

/* what Unity hands the interception: the loader's, with vkCreateDevice recorded */
static PFN_vkVoidFunction VKAPI_CALL unity_gipa(VkInstance i, const char *name) {
    if (strcmp(name, "vkCreateDevice") == 0) return (PFN_vkVoidFunction)recording_create_device;
    return vkGetInstanceProcAddr(i, name);
}

static void unity_init_vulkan(void) {
    PFN_vkGetInstanceProcAddr gipa = intercept ? intercept(unity_gipa, intercept_ud) : unity_gipa;
    PFN_vkCreateInstance create_instance = (PFN_vkCreateInstance)gipa(NULL, "vkCreateInstance");
    PFN_vkCreateDevice create_device;
    VkApplicationInfo ai = {VK_STRUCTURE_TYPE_APPLICATION_INFO, NULL, "unity_host", 1, "Unity (played)", 1,
                            VK_API_VERSION_1_2};
    VkInstanceCreateInfo ici = {VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, NULL, 0, &ai};
    VkPhysicalDevice pds[16];
    uint32_t n = 16, nq = 16;
    VkQueueFamilyProperties qp[16];
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    VkDeviceCreateInfo dci = {VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    VkCommandPoolCreateInfo pci = {VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, NULL,
                                   VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT};
    VkPhysicalDeviceProperties props;
    if (!create_instance) DIE("no vkCreateInstance through the interception");
    VK(create_instance(&ici, NULL, &inst));
    VK(vkEnumeratePhysicalDevices(inst, &n, pds));
    if (n == 0) DIE("no Vulkan device");
    phys = pds[0];
    for (uint32_t i = 0; i < n; i++) { /* a discrete GPU if there is one, else the first */
        vkGetPhysicalDeviceProperties(pds[i], &props);
        if (props.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU) phys = pds[i];
    }
    vkGetPhysicalDeviceProperties(phys, &props);
    printf("DEVICE name=\"%s\" api=%u.%u.%u\n", props.deviceName, VK_VERSION_MAJOR(props.apiVersion),
           VK_VERSION_MINOR(props.apiVersion), VK_VERSION_PATCH(props.apiVersion));
    vkGetPhysicalDeviceQueueFamilyProperties(phys, &nq, qp);
    queue_family = UINT32_MAX;
    for (uint32_t i = 0; i < nq && queue_family == UINT32_MAX; i++)
        if (qp[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) queue_family = i;
    if (queue_family == UINT32_MAX) DIE("no graphics queue");
    qci.queueFamilyIndex = queue_family;
    qci.queueCount = 1;
    qci.pQueuePriorities = &prio;
    dci.queueCreateInfoCount = 1;
    dci.pQueueCreateInfos = &qci; /* Unity's own request: no extension, no feature of the bridge's */
    create_device = (PFN_vkCreateDevice)gipa(inst, "vkCreateDevice");
    if (!create_device) DIE("no vkCreateDevice through the interception");
    VK(create_device(phys, &dci, NULL, &dev));
    vkGetDeviceQueue(dev, queue_family, 0, &queue);
    pci.queueFamilyIndex = queue_family;
    VK(vkCreateCommandPool(dev, &pci, NULL, &pool));
    begin_cur();
}

/* ---- the "C#" side's textures and frames ---------------------------------------------------------- */

static uint32_t memory_type(uint32_t bits, VkMemoryPropertyFlags want) {
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(phys, &mp);
    for (uint32_t i = 0; i < mp.memoryTypeCount; i++)
        if ((bits & (1u << i)) && (mp.memoryTypes[i].propertyFlags & want) == want) return i;
    DIE("no memory type with flags %x", want);
}

static texture texture_new(VkFormat format) {
    texture t;
    VkImageCreateInfo ici = {VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO};
    VkMemoryRequirements req;
    VkMemoryAllocateInfo mai = {VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    memset(&t, 0, sizeof t);
    ici.imageType = VK_IMAGE_TYPE_2D;
    ici.format = format;
    ici.extent.width = W;
    ici.extent.height = H;
    ici.extent.depth = 1;
    ici.mipLevels = ici.arrayLayers = 1;
    ici.samples = VK_SAMPLE_COUNT_1_BIT;
    ici.tiling = VK_IMAGE_TILING_OPTIMAL;
    ici.usage = VK_IMAGE_USAGE_TRANSFER_SRC_BIT | VK_IMAGE_USAGE_TRANSFER_DST_BIT | VK_IMAGE_USAGE_SAMPLED_BIT;
    VK(vkCreateImage(dev, &ici, NULL, &t.image));
    vkGetImageMemoryRequirements(dev, t.image, &req);
    mai.allocationSize = req.size;
    mai.memoryTypeIndex = memory_type(req.memoryTypeBits, 0);
    VK(vkAllocateMemory(dev, &mai, NULL, &t.mem));
    VK(vkBindImageMemory(dev, t.image, t.mem, 0));
    t.format = format;
    t.layout = VK_IMAGE_LAYOUT_UNDEFINED;
    return t;
}

typedef struct { VkBuffer buf; VkDeviceMemory mem; unsigned char *map; } host_buffer;

static host_buffer host_buffer_new(uint64_t size) {
    host_buffer b;
    VkBufferCreateInfo bci = {VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    VkMemoryRequirements req;
    VkMemoryAllocateInfo mai = {VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    void *p;
    bci.size = size;
    bci.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    VK(vkCreateBuffer(dev, &bci, NULL, &b.buf));
    vkGetBufferMemoryRequirements(dev, b.buf, &req);
    mai.allocationSize = req.size;
    mai.memoryTypeIndex =
        memory_type(req.memoryTypeBits, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
    VK(vkAllocateMemory(dev, &mai, NULL, &b.mem));
    VK(vkBindBufferMemory(dev, b.buf, b.mem, 0));
    VK(vkMapMemory(dev, b.mem, 0, VK_WHOLE_SIZE, 0, &p));
    b.map = p;
    return b;
}

static VkBufferImageCopy whole(uint64_t offset) {
    VkBufferImageCopy r;
    memset(&r, 0, sizeof r);
    r.bufferOffset = offset;
    r.imageSubresource.aspectMask = VK_IMAGE_ASPECT_COLOR_BIT;
    r.imageSubresource.layerCount = 1;
    r.imageExtent.width = W;
    r.imageExtent.height = H;
    r.imageExtent.depth = 1;
    return r;
}

/* the reference layout (docs/gbuffer-layout.md) and plausible G-buffer values, as tests/e2e_test.c makes them */
static ss_channel CH[SS_REFERENCE_CHANNEL_COUNT];
static uint64_t SLOT_BYTES;
static const struct { const char *name, *format, *encoding; uint32_t bytes, first; } SPEC[SS_REFERENCE_CHANNEL_COUNT] = SS_REFERENCE_CHANNELS;

static void reference_layout(void) {
    uint64_t offset = 0, last = 0;
    for (int i = 0; i < SS_REFERENCE_CHANNEL_COUNT; i++) {
        memset(&CH[i], 0, sizeof CH[i]);
        CH[i].name = SPEC[i].name;
        CH[i].format = SPEC[i].format;
        CH[i].encoding = SPEC[i].encoding;
        CH[i].first = SPEC[i].first;
        if (SPEC[i].first) { CH[i].offset = last; continue; }
        CH[i].offset = last = offset;
        offset = (offset + (uint64_t)W * H * SPEC[i].bytes + SS_REFERENCE_PLANE_ALIGN - 1) / SS_REFERENCE_PLANE_ALIGN * SS_REFERENCE_PLANE_ALIGN;
    }
    SLOT_BYTES = offset;
}

static uint32_t rng = 12345;
static uint32_t next_rand(void) { rng = rng * 1664525u + 1013904223u; return rng >> 8; }
static float unit(void) { return (float)(next_rand() & 0xffff) / 65535.0f; }
static uint16_t half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
    if (exp < 113) return (uint16_t)sign;
    return (uint16_t)(sign | ((exp - 112) << 10) | (mant >> 13));
}

/* plane `i` of the layout (a channel index with first == 0) for one frame, tight rows */
static void fill(int i, unsigned char *p) {
    for (uint32_t px = 0; px < W * H; px++) {
        if (!strcmp(SPEC[i].format, "rgba16f")) {
            uint16_t *h = (uint16_t *)(void *)(p + 8 * (size_t)px);
            for (int k = 0; k < 4; k++) h[k] = half(i == 2 ? unit() * 2 - 1 : unit());
        } else if (!strcmp(SPEC[i].format, "r32f")) {
            float d = 1.0f + 9.0f * unit();
            memcpy(p + 4 * (size_t)px, &d, 4);
        } else if (!strcmp(SPEC[i].format, "rg16f")) {
            uint16_t *h = (uint16_t *)(void *)(p + 4 * (size_t)px);
            h[0] = half(unit() - 0.5f);
            h[1] = half(unit() - 0.5f);
        } else if (!strcmp(SPEC[i].format, "r32_uint")) {
            uint32_t id = next_rand() % 10;
            memcpy(p + 4 * (size_t)px, &id, 4);
        } else {
            for (uint32_t k = 0; k < SPEC[i].bytes; k++) p[SPEC[i].bytes * (size_t)px + k] = (unsigned char)next_rand();
        }
    }
}

static void write_file(const char *dir, const char *stem, int i, const void *data, size_t n) {
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s%d.bin", dir, stem, i);
    if (!(f = fopen(path, "wb")) || fwrite(data, 1, n, f) != n) DIE("cannot write %s", path);
    fclose(f);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, double *v, unsigned n) {
    if (!n) return;
    qsort(v, n, sizeof *v, cmp_double);
    printf("TIMING %s n=%u p50_us=%.2f p99_us=%.2f max_us=%.2f\n", name, n, v[n / 2], v[(unsigned)(n * 0.99)], v[n - 1]);
}

int main(int argc, char **argv) {
    void *lib;
    void(UNITY_API * plugin_load)(IUnityInterfaces *);
    void(UNITY_API * plugin_unload)(void);
    ssu_render_event (*get_event)(void);
    int (*event_id)(void), (*ready)(void), (*attach)(const ssu_attach_config *), (*detach)(uint32_t);
    int (*get_planes)(ssu_plane *, uint32_t, uint32_t *), (*get_stats)(ssvk_frames_stats *);
    const char *(*last_error)(void);
    ssu_render_event render;
    ss_client_config cc = {sizeof cc};
    ss_session_config sc = {sizeof sc};
    ss_client *client = NULL;
    ss_session *session = NULL;
    ssu_attach_config ac = {sizeof ac};
    ssu_plane planes[SSVK_MAX_PLANES];
    uint32_t n_planes = 0;
    texture tex[SSVK_MAX_PLANES], target;
    int plane_channel[SSVK_MAX_PLANES];
    host_buffer stage, back;
    unsigned char *slot, *plane_bytes[SSVK_MAX_PLANES];
    uint64_t stage_offsets[SSVK_MAX_PLANES], stage_bytes = 0;
    ssu_frame_data fd;
    ssvk_frames_stats stats = {sizeof stats};
    double *event_us;
    unsigned n_event = 0;
    int frames, st;
    const char *dir;
    VkFence fence;
    VkFenceCreateInfo fci = {VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if (argc != 7) {
        fprintf(stderr, "usage: unity_host PLUGIN ADDRESS DIR FRAMES WIDTH HEIGHT\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    dir = argv[3];
    frames = atoi(argv[4]);
    W = (uint32_t)atoi(argv[5]);
    H = (uint32_t)atoi(argv[6]);
    event_us = calloc(1u << 20, sizeof *event_us);

    /* the player starts: the plugin is loaded (on startup) before any device exists */
    if (!(lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL))) DIE("dlopen %s: %s", argv[1], dlerror());
#define SYM(var, name) if (!(*(void **)&var = dlsym(lib, name))) DIE("the plugin lacks %s", name)
    SYM(plugin_load, "UnityPluginLoad");
    SYM(plugin_unload, "UnityPluginUnload");
    SYM(get_event, "StreamStyleUnity_GetRenderEventFunc");
    SYM(event_id, "StreamStyleUnity_FrameEventId");
    SYM(ready, "StreamStyleUnity_DeviceReady");
    SYM(attach, "StreamStyleUnity_Attach");
    SYM(detach, "StreamStyleUnity_Detach");
    SYM(get_planes, "StreamStyleUnity_GetPlanes");
    SYM(get_stats, "StreamStyleUnity_GetStats");
    SYM(last_error, "StreamStyleUnity_LastError");
    if (dlsym(lib, "ssvk_create") || dlsym(lib, "ssvk_frames_run"))
        DIE("the plugin exports the bridge's symbols (they must stay hidden)");
    plugin_load(&u_ifaces);
    if (!intercept || !device_cb || reserved != 1) DIE("UnityPluginLoad: intercept %p, device callback %p, %d event ids",
                                                       (void *)intercept, (void *)device_cb, reserved);
    if (ready()) DIE("ready before a device exists");
    printf("CHECK plugin_load ok event_id=%d\n", event_id());

    unity_init_vulkan();
    {
        static const char *const wanted[] = {SSVK_DEVICE_EXTENSIONS};
        uint32_t nhave = 0;
        VkExtensionProperties *have;
        int added = 0;
        vkEnumerateDeviceExtensionProperties(phys, NULL, &nhave, NULL);
        have = calloc(nhave, sizeof *have);
        vkEnumerateDeviceExtensionProperties(phys, NULL, &nhave, have);
        for (size_t k = 0; k < sizeof wanted / sizeof *wanted; k++) {
            int offered = 0, enabled = 0;
            for (uint32_t j = 0; j < nhave; j++) offered |= !strcmp(have[j].extensionName, wanted[k]);
            for (uint32_t j = 0; j < n_created_exts; j++) enabled |= !strcmp(created_exts[j], wanted[k]);
            if (offered && !enabled) DIE("the plugin did not add %s to Unity's device", wanted[k]);
            if (!offered && enabled) DIE("the plugin added %s, which the device lacks", wanted[k]);
            added += enabled;
        }
        free(have);
        if (!created_timeline) DIE("the plugin did not enable timelineSemaphore");
        printf("CHECK device_extensions ok added=%d of %zu timeline=1\n", added, sizeof wanted / sizeof *wanted);
    }
    device_cb(kUnityGfxDeviceEventInitialize);
    if (!ready()) DIE("not ready after the device event: %s", last_error());
    if (configured_event != event_id() || configured.renderPassPrecondition != kUnityVulkanRenderPass_EnsureOutside ||
        configured.graphicsQueueAccess != kUnityVulkanGraphicsQueueAccess_Allow)
        DIE("the frame event is not configured outside a render pass with queue access");
    printf("CHECK device_event ok ready=1 configured=%d\n", configured_event);

    /* "C#": the session with libstreamstyle, then attached */
    reference_layout();
    cc.address = argv[2];
    cc.name = "unity_host";
    cc.timeout_ms = 120000;
    if (ss_client_create(&cc, &client) != SS_OK) DIE("ss_client_create: %s %s", ss_last_error_code(), ss_last_error_message());
    sc.width = W;
    sc.height = H;
    sc.channels = CH;
    sc.channel_count = SS_REFERENCE_CHANNEL_COUNT;
    sc.input_slot_bytes = SLOT_BYTES;
    sc.backend = SS_BACKEND_SHM;
    sc.slots = 3;
    sc.seed = 11;
    ss_params_init(&sc.params);
    sc.params.deadline_ms = 30000; /* a loaded CPU: every frame must be stylized for the comparison */
    if (ss_session_open(client, &sc, &session) != SS_OK)
        DIE("ss_session_open: %s %s", ss_last_error_code(), ss_last_error_message());
    ac.session = session;
    ac.backend = SS_BACKEND_SHM;
    ac.width = W;
    ac.height = H;
    ac.channels = CH;
    ac.channel_count = SS_REFERENCE_CHANNEL_COUNT;
    ac.input_slot_bytes = SLOT_BYTES;
    {   /* refusals: a short config, a size that is not the session's; nothing attached by them */
        ssu_attach_config bad = ac;
        bad.size = 4;
        if (attach(&bad) != SS_INVALID_ARGUMENT) DIE("a short attach config was accepted");
        bad = ac;
        bad.width = W + 1;
        if (attach(&bad) != SS_INVALID_ARGUMENT || !strstr(last_error(), "session is")) DIE("a wrong size was accepted: %s", last_error());
        if (get_stats(&stats) != SS_WRONG_STATE) DIE("stats without a session");
    }
    if ((st = attach(&ac)) != SS_OK) DIE("attach -> %d: %s", st, last_error());
    if (attach(&ac) != SS_WRONG_STATE) DIE("a second attach was accepted");
    if (get_planes(planes, SSVK_MAX_PLANES, &n_planes) != SS_OK || n_planes != 7) DIE("planes: %u", n_planes);
    printf("CHECK attach ok planes=%u refusals=4\n", n_planes);

    /* the plane textures in the plugin's formats, and the target */
    for (uint32_t i = 0, c = 0; i < n_planes; i++, c++) {
        while (SPEC[c].first) c++;
        if (strcmp(planes[i].channel, SPEC[c].name) || strcmp(planes[i].format, SPEC[c].format))
            DIE("plane %u is %s %s, not %s %s", i, planes[i].channel, planes[i].format, SPEC[c].name, SPEC[c].format);
        plane_channel[i] = (int)c;
        tex[i] = texture_new((VkFormat)planes[i].vk_format);
        stage_offsets[i] = stage_bytes;
        stage_bytes += ((uint64_t)W * H * SPEC[c].bytes + SS_REFERENCE_PLANE_ALIGN - 1) / SS_REFERENCE_PLANE_ALIGN * SS_REFERENCE_PLANE_ALIGN;
        plane_bytes[i] = malloc((size_t)W * H * SPEC[c].bytes);
    }
    target = texture_new(VK_FORMAT_R8G8B8A8_UNORM);
    stage = host_buffer_new(stage_bytes);
    back = host_buffer_new((uint64_t)W * H * 4);
    slot = malloc(SLOT_BYTES);
    VK(vkCreateFence(dev, &fci, NULL, &fence));
    render = get_event();

    for (int f = 0; f < frames; f++) {
        double end = now_us() + 120e6;
        /* Unity renders this frame's G-buffers into the plane textures */
        memset(slot, 0, SLOT_BYTES);
        for (uint32_t i = 0; i < n_planes; i++) {
            int c = plane_channel[i];
            VkBufferImageCopy r = whole(stage_offsets[i]);
            fill(c, plane_bytes[i]);
            memcpy(stage.map + stage_offsets[i], plane_bytes[i], (size_t)W * H * SPEC[c].bytes);
            memcpy(slot + CH[c].offset, plane_bytes[i], (size_t)W * H * SPEC[c].bytes);
            barrier(&tex[i], VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, VK_ACCESS_TRANSFER_WRITE_BIT);
            vkCmdCopyBufferToImage(cur, stage.buf, tex[i].image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, 1, &r);
        }
        write_file(dir, "in", f, slot, SLOT_BYTES);
        /* the C# command buffer's plugin event: send, and composite whatever is newest */
        memset(&fd, 0, sizeof fd);
        fd.size = sizeof fd;
        fd.flags = SSU_FRAME_SEND | SSU_FRAME_COMPOSITE;
        for (uint32_t i = 0; i < n_planes; i++) fd.planes[i] = &tex[i];
        fd.target = &target;
        {   /* the plugin's time on the render thread: the event minus Unity's own flush inside it */
            double t0 = now_us();
            flush_us = 0;
            render(event_id(), &fd);
            event_us[n_event++] = now_us() - t0 - flush_us;
        }
        submit_cur(VK_NULL_HANDLE);
        /* the following frames' events, composite only, until this frame is composited; the stage
         * buffer is not reused before the upload has run (the host's own pacing) */
        for (;;) {
            get_stats(&stats);
            if (stats.last_composited_seq == (uint64_t)f + 1) break;
            if (now_us() > end) DIE("frame %d was not composited: %s (sent %llu done %llu late %llu errors %llu busy %llu)", f,
                                    last_error(), (unsigned long long)stats.sent, (unsigned long long)stats.done,
                                    (unsigned long long)stats.late, (unsigned long long)stats.errors,
                                    (unsigned long long)stats.busy);
            usleep(1000);
            fd.flags = SSU_FRAME_COMPOSITE;
            {
                double t0 = now_us();
                flush_us = 0;
                render(event_id(), &fd);
                if (n_event < (1u << 20)) event_us[n_event++] = now_us() - t0 - flush_us;
            }
            submit_cur(VK_NULL_HANDLE);
        }
        /* read the target back, as a screenshot would */
        {
            VkBufferImageCopy r = whole(0);
            barrier(&target, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, VK_ACCESS_TRANSFER_READ_BIT);
            vkCmdCopyImageToBuffer(cur, target.image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, back.buf, 1, &r);
            VK(vkResetFences(dev, 1, &fence));
            submit_cur(fence);
            VK(vkWaitForFences(dev, 1, &fence, VK_TRUE, 10000000000ull));
            write_file(dir, "out", f, back.map, (size_t)W * H * 4);
        }
    }
    get_stats(&stats);
    printf("STATS sent=%llu done=%llu composited=%llu busy=%llu late=%llu errors=%llu runs=%llu cuda=%d live=%d\n",
           (unsigned long long)stats.sent, (unsigned long long)stats.done, (unsigned long long)stats.composited,
           (unsigned long long)stats.busy, (unsigned long long)stats.late, (unsigned long long)stats.errors,
           (unsigned long long)stats.runs, stats.cuda, stats.live);
    if (stats.sent != (uint64_t)frames || stats.done != (uint64_t)frames || stats.composited != (uint64_t)frames ||
        stats.cuda != 0 || !stats.live)
        DIE("every frame sent, done and composited once over shm");
    printf("CHECK frames ok frames=%d\n", frames);

    {   /* a texture of the wrong format is refused at the event: nothing sent, the error said */
        uint64_t sent = stats.sent;
        fd.flags = SSU_FRAME_SEND;
        fd.planes[0] = &target; /* RGBA8 where color is rgba16f */
        render(event_id(), &fd);
        submit_cur(VK_NULL_HANDLE);
        get_stats(&stats);
        if (stats.sent != sent || !strstr(last_error(), "format")) DIE("a wrong texture went through: %s", last_error());
        printf("CHECK wrong_texture ok \"%s\"\n", last_error());
    }
    report("render_event", event_us, n_event); /* the plugin's part, its queue callback included */
    report("queue_callback", queue_cb_us, n_queue_cb);

    VK(vkQueueWaitIdle(queue));
    if ((st = detach(5000)) != SS_OK) DIE("detach -> %d: %s", st, last_error());
    if (get_stats(&stats) != SS_WRONG_STATE) DIE("stats after detach");
    {   /* an event with nothing attached does nothing */
        unsigned before = access_queue_calls;
        render(event_id(), &fd);
        if (access_queue_calls != before) DIE("an event without a session reached the queue");
    }
    plugin_unload();
    if (device_cb || intercept) DIE("UnityPluginUnload left its callbacks registered");
    printf("CHECK unload ok access_texture_calls=%u access_queue_calls=%u\n", access_texture_calls, access_queue_calls);
    ss_session_close(session);
    ss_client_destroy(client);

    VK(vkQueueWaitIdle(queue));
    vkEndCommandBuffer(cur);
    vkFreeCommandBuffers(dev, pool, 1, &cur);
    if (n_done) vkFreeCommandBuffers(dev, pool, n_done, done_cmds);
    for (uint32_t i = 0; i < n_planes; i++) {
        vkDestroyImage(dev, tex[i].image, NULL);
        vkFreeMemory(dev, tex[i].mem, NULL);
        free(plane_bytes[i]);
    }
    vkDestroyImage(dev, target.image, NULL);
    vkFreeMemory(dev, target.mem, NULL);
    vkDestroyBuffer(dev, stage.buf, NULL);
    vkFreeMemory(dev, stage.mem, NULL);
    vkDestroyBuffer(dev, back.buf, NULL);
    vkFreeMemory(dev, back.mem, NULL);
    vkDestroyFence(dev, fence, NULL);
    vkDestroyCommandPool(dev, pool, NULL);
    vkDestroyDevice(dev, NULL);
    vkDestroyInstance(inst, NULL);
    dlclose(lib);
    free(slot);
    free(event_us);
    printf("RESULT ok\n");
    return 0;
}
