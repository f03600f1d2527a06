/* host.c: ssvk_host, a headless program that plays an engine on top of the Vulkan bridge.
 *
 *   ssvk_host vulkan W H           the Vulkan half (any Vulkan 1.2 device; lavapipe in CI)
 *   ssvk_host cuda W H FRAMES      the same, then the CUDA half on a GPU (gpu-check.sh)
 *
 * It uploads known, random G-buffer planes (the reference layout's formats; never zeros, floats
 * finite) into engine images in those formats, and records the bridge's copies into its exportable
 * input buffer. Vulkan half: the memory exported as an fd (fstat), a second VkDeviceMemory imported
 * from a dup of that fd read back byte for byte, the plane plan applied on the CPU equal to the
 * layout's slot, the timeline semaphores signalled and waited through Vulkan (and, where the device
 * exports them, through a second semaphore imported from the fd), and the composite copy waiting on
 * the GPU for `stylized` until it is signalled. CUDA half: the bridge imported into CUDA, FRAMES frames
 * copied into a cuda-ipc ring's input slot (cuMemAlloc memory with an IPC handle and an interprocess
 * ready event, as libstreamstyle's ring makes it) compared byte for byte, the copy timed with CUDA
 * events, and a known output copied back and composited by Vulkan after the GPU-side wait.
 * Prints one line per check ("CHECK name ok ..."), then "RESULT ok"; exits 1 on the first failure. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ssvk.h"

#define DIE(...) do { printf("FAIL " __VA_ARGS__); printf(" (%s)\n", ssvk_last_error()); exit(1); } while (0)
#define VK(call) do { VkResult r_ = (call); if (r_ != VK_SUCCESS) DIE("%s -> %d", #call, r_); } while (0)

static VkInstance inst;
static VkPhysicalDevice phys;
static VkDevice dev;
static VkQueue queue;
static VkCommandPool pool;
static uint32_t W, H;

static uint64_t rng_state;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static void setup(int want_semaphore_fd) {
    VkApplicationInfo ai = {VK_STRUCTURE_TYPE_APPLICATION_INFO, NULL, "ssvk_host", 1, "streamstyle", 1, VK_API_VERSION_1_2};
    VkInstanceCreateInfo ici = {VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, NULL, 0, &ai};
    VkPhysicalDevice pds[16];
    uint32_t n = 16, qf = UINT32_MAX, nq = 16, next = 0;
    VkQueueFamilyProperties qp[16];
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    VkPhysicalDeviceVulkan12Features f12 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkDeviceCreateInfo dci = {VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, &f12};
    const char *wanted[] = {SSVK_DEVICE_EXTENSIONS};
    const char *exts[8];
    VkExtensionProperties *have;
    uint32_t nhave = 0;
    VkPhysicalDeviceProperties props;
    VkCommandPoolCreateInfo pci = {VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, NULL,
                                   VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT};
    int best = -1;
    VK(vkCreateInstance(&ici, NULL, &inst));
    VK(vkEnumeratePhysicalDevices(inst, &n, pds));
    for (uint32_t i = 0; i < n; i++) { /* a discrete GPU if there is one (the GPU machine), else the first */
        vkGetPhysicalDeviceProperties(pds[i], &props);
        if (best < 0 || props.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU) best = (int)i;
    }
    if (best < 0) DIE("no Vulkan device");
    phys = pds[best];
    vkGetPhysicalDeviceProperties(phys, &props);
    printf("DEVICE name=\"%s\" api=%u.%u.%u\n", props.deviceName, VK_VERSION_MAJOR(props.apiVersion),
           VK_VERSION_MINOR(props.apiVersion), VK_VERSION_PATCH(props.apiVersion));
    vkEnumerateDeviceExtensionProperties(phys, NULL, &nhave, NULL);
    have = calloc(nhave, sizeof *have);
    vkEnumerateDeviceExtensionProperties(phys, NULL, &nhave, have);
    for (size_t k = 0; k < sizeof wanted / sizeof *wanted; k++) {
        int found = 0;
        for (uint32_t j = 0; j < nhave; j++) found |= strcmp(have[j].extensionName, wanted[k]) == 0;
        if (found) exts[next++] = wanted[k];
        else if (strcmp(wanted[k], "VK_KHR_external_semaphore_fd") == 0 && !want_semaphore_fd)
            printf("NOTE the device lacks %s: semaphore export is not tested here\n", wanted[k]);
        else DIE("the device lacks %s", wanted[k]);
    }
    free(have);
    vkGetPhysicalDeviceQueueFamilyProperties(phys, &nq, qp);
    for (uint32_t i = 0; i < nq && qf == UINT32_MAX; i++)
        if (qp[i].queueFlags & (VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT)) qf = i;
    qci.queueFamilyIndex = qf;
    qci.queueCount = 1;
    qci.pQueuePriorities = &prio;
    f12.timelineSemaphore = VK_TRUE;
    dci.queueCreateInfoCount = 1;
    dci.pQueueCreateInfos = &qci;
    dci.enabledExtensionCount = next;
    dci.ppEnabledExtensionNames = exts;
    VK(vkCreateDevice(phys, &dci, NULL, &dev));
    vkGetDeviceQueue(dev, qf, 0, &queue);
    pci.queueFamilyIndex = qf;
    VK(vkCreateCommandPool(dev, &pci, NULL, &pool));
}

static VkCommandBuffer begin(void) {
    VkCommandBufferAllocateInfo ai = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, NULL, pool,
                                      VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1};
    VkCommandBufferBeginInfo bi = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, NULL,
                                   VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VkCommandBuffer cmd;
    VK(vkAllocateCommandBuffers(dev, &ai, &cmd));
    VK(vkBeginCommandBuffer(cmd, &bi));
    return cmd;
}

static VkFence fence_new(void) {
    VkFenceCreateInfo fi = {VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence f;
    VK(vkCreateFence(dev, &fi, NULL, &f));
    return f;
}

/* end, submit plainly, wait: only for the host's own uploads and readbacks */
static void run_now(VkCommandBuffer cmd) {
    VkSubmitInfo si = {VK_STRUCTURE_TYPE_SUBMIT_INFO};
    VkFence f = fence_new();
    VK(vkEndCommandBuffer(cmd));
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd;
    VK(vkQueueSubmit(queue, 1, &si, f));
    VK(vkWaitForFences(dev, 1, &f, VK_TRUE, UINT64_MAX));
    vkDestroyFence(dev, f, NULL);
    vkFreeCommandBuffers(dev, pool, 1, &cmd);
}

typedef struct { VkBuffer buf; VkDeviceMemory mem; void *map; } host_buffer;

static host_buffer host_buffer_new(uint64_t size) {
    host_buffer b;
    VkBufferCreateInfo bci = {VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    VkMemoryRequirements req;
    VkPhysicalDeviceMemoryProperties mp;
    VkMemoryAllocateInfo mai = {VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    bci.size = size;
    bci.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    VK(vkCreateBuffer(dev, &bci, NULL, &b.buf));
    vkGetBufferMemoryRequirements(dev, b.buf, &req);
    vkGetPhysicalDeviceMemoryProperties(phys, &mp);
    mai.allocationSize = req.size;
    mai.memoryTypeIndex = UINT32_MAX;
    for (uint32_t i = 0; i < mp.memoryTypeCount && mai.memoryTypeIndex == UINT32_MAX; i++)
        if ((req.memoryTypeBits & (1u << i)) && (mp.memoryTypes[i].propertyFlags & want) == want) mai.memoryTypeIndex = i;
    VK(vkAllocateMemory(dev, &mai, NULL, &b.mem));
    VK(vkBindBufferMemory(dev, b.buf, b.mem, 0));
    VK(vkMapMemory(dev, b.mem, 0, VK_WHOLE_SIZE, 0, &b.map));
    return b;
}

static void host_buffer_free(host_buffer *b) {
    vkUnmapMemory(dev, b->mem);
    vkDestroyBuffer(dev, b->buf, NULL);
    vkFreeMemory(dev, b->mem, NULL);
}

typedef struct { VkImage image; VkDeviceMemory mem; } image;

static image image_new(VkFormat format) {
    image im;
    VkImageCreateInfo ici = {VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO};
    VkMemoryRequirements req;
    VkPhysicalDeviceMemoryProperties mp;
    VkMemoryAllocateInfo mai = {VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    ici.imageType = VK_IMAGE_TYPE_2D;
    ici.format = format;
    ici.extent.width = W;
    ici.extent.height = H;
    ici.extent.depth = 1;
    ici.mipLevels = ici.arrayLayers = 1;
    ici.samples = VK_SAMPLE_COUNT_1_BIT;
    ici.tiling = VK_IMAGE_TILING_OPTIMAL; /* a render target, as an engine has it */
    ici.usage = VK_IMAGE_USAGE_TRANSFER_SRC_BIT | VK_IMAGE_USAGE_TRANSFER_DST_BIT | VK_IMAGE_USAGE_SAMPLED_BIT;
    VK(vkCreateImage(dev, &ici, NULL, &im.image));
    vkGetImageMemoryRequirements(dev, im.image, &req);
    vkGetPhysicalDeviceMemoryProperties(phys, &mp);
    mai.allocationSize = req.size;
    for (uint32_t i = 0; i < mp.memoryTypeCount; i++)
        if (req.memoryTypeBits & (1u << i)) { mai.memoryTypeIndex = i; break; }
    VK(vkAllocateMemory(dev, &mai, NULL, &im.mem));
    VK(vkBindImageMemory(dev, im.image, im.mem, 0));
    return im;
}

static void to_layout(VkCommandBuffer cmd, VkImage img, VkImageLayout from, VkImageLayout to) {
    VkImageMemoryBarrier b = {VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER};
    b.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    b.dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    b.oldLayout = from;
    b.newLayout = to;
    b.srcQueueFamilyIndex = b.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
    b.image = img;
    b.subresourceRange.aspectMask = VK_IMAGE_ASPECT_COLOR_BIT;
    b.subresourceRange.levelCount = b.subresourceRange.layerCount = 1;
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT,
                         VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 0, NULL, 0, NULL, 1, &b);
}

static void copy_buffer(VkCommandBuffer cmd, VkBuffer src, VkBuffer dst, uint64_t bytes) {
    VkBufferCopy c = {0, 0, bytes};
    vkCmdCopyBuffer(cmd, src, dst, 1, &c);
}

/* the reference layout (docs/gbuffer-layout.md), planes on 256-byte boundaries, rows packed; with
 * `odd_layout`, depth's rows are 2 bytes longer than its pixels (a pitch no r32f image copy can
 * write, so the bridge copies that plane on its own) */
static ss_channel channels[8];
static int odd_layout;
static uint64_t layout_slot_bytes(void) {
    static const struct { const char *name, *format, *encoding; uint32_t bytes, first; } spec[8] = {
        {"color", "rgba16f", "linear_hdr", 8, 0}, {"depth", "r32f", "linear", 4, 0},
        {"normals", "rgba16f", "signed", 8, 0},   {"albedo", "rgba8_unorm", "unit", 4, 0},
        {"roughness", "rg8_unorm", "unit", 2, 0}, {"metallic", "rg8_unorm", "unit", 2, 1},
        {"motion", "rg16f", "pixels", 4, 0},      {"ids", "r32_uint", "uint", 4, 0}};
    uint64_t offset = 0, last = 0;
    for (int i = 0; i < 8; i++) {
        memset(&channels[i], 0, sizeof channels[i]);
        channels[i].name = spec[i].name;
        channels[i].format = spec[i].format;
        channels[i].encoding = spec[i].encoding;
        channels[i].first = spec[i].first;
        if (spec[i].first) { channels[i].offset = last; continue; }
        channels[i].offset = last = offset;
        if (odd_layout && i == 1) channels[i].row_pitch = W * spec[i].bytes + 2;
        offset = (offset + (uint64_t)(channels[i].row_pitch ? channels[i].row_pitch : W * spec[i].bytes) * (H - 1) +
                  (uint64_t)W * spec[i].bytes + 255) / 256 * 256;
    }
    return offset;
}

/* random bytes, never all zero, floats kept finite (the top exponent bit of each component cleared) */
static void fill_plane(unsigned char *p, const ssvk_format *f, uint64_t bytes, uint32_t seed) {
    uint32_t comp = strstr(f->name, "16f") ? 2 : strstr(f->name, "32f") ? 4 : 0;
    rng_state = 0x9E3779B97F4A7C15ull ^ seed;
    for (uint64_t i = 0; i < bytes; i++) p[i] = (unsigned char)rnd();
    if (comp)
        for (uint64_t i = comp - 1; i < bytes; i += comp) p[i] &= 0xBF;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* ---- CUDA, for the test's own ring and timing (the bridge opens the driver by itself) ---------- */
typedef int (*cu_fn)();
static struct {
    void *lib;
    int (*cuInit)(unsigned);
    int (*cuDeviceGet)(int *, int);
    int (*cuDeviceGetName)(char *, int, int);
    int (*cuDevicePrimaryCtxRetain)(void **, int);
    int (*cuCtxSetCurrent)(void *);
    int (*cuMemAlloc_v2)(unsigned long long *, size_t);
    int (*cuMemFree_v2)(unsigned long long);
    int (*cuIpcGetMemHandle)(void *, unsigned long long);
    int (*cuEventCreate)(void **, unsigned);
    int (*cuEventRecord)(void *, void *);
    int (*cuEventSynchronize)(void *);
    int (*cuEventElapsedTime_v2)(float *, void *, void *);
    int (*cuStreamCreate)(void **, unsigned);
    int (*cuStreamSynchronize)(void *);
    int (*cuMemcpyDtoH_v2)(void *, unsigned long long, size_t);
    int (*cuMemcpyHtoD_v2)(unsigned long long, const void *, size_t);
    int (*cuMemsetD8Async)(unsigned long long, unsigned char, size_t, void *);
} cuh;

#define CUH(call) do { int r_ = (call); if (r_ != 0) DIE("%s -> CUDA error %d", #call, r_); } while (0)

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

#ifdef SSVK_WITH_CLIENT
/* The whole chain through libstreamstyle and the service: a cuda-ipc session opened with the same
 * layout; per frame the bridge's Vulkan copies (rendered = n), ss_acquire on the stream, the CUDA copies
 * into the slot (consumed = n), ss_submit (ready), the DONE polled, ss_output (the stream waits on done),
 * the CUDA copy out (stylized = m), the composite on Vulkan behind the GPU-side wait, read back and
 * compared with the ring's output slot. Prints the frame time (Vulkan submit to composite read back). */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int run_session(const char *address, int frames, ssvk_bridge *bridge, const ssvk_info *info, ssvk_cuda *cuda,
                       uint64_t slot_bytes, const image *planes_img, VkImage composite, host_buffer *back,
                       VkFence fence, uint64_t n, uint64_t m) {
    ss_client_config cc = {sizeof cc};
    ss_session_config sc = {sizeof sc};
    ss_client *client = NULL;
    ss_session *session = NULL;
    void *stream;
    unsigned char *ring_out = malloc(info->output_frame_bytes);
    double *t = calloc((size_t)frames, sizeof *t);
    int done = 0, failures = 0, nt = 0;
    cc.address = address;
    cc.name = "ssvk_host";
    cc.timeout_ms = 120000; /* the first open captures the session's graph */
    if (ss_client_create(&cc, &client) != SS_OK) {
        printf("FAIL ss_client_create: %s %s\n", ss_last_error_code(), ss_last_error_message());
        return 1;
    }
    sc.width = W;
    sc.height = H;
    sc.channels = channels;
    sc.channel_count = 8;
    sc.input_slot_bytes = slot_bytes;
    sc.backend = SS_BACKEND_CUDA_IPC;
    sc.slots = 3;
    sc.device = 0;
    ss_params_init(&sc.params);
    if (ss_session_open(client, &sc, &session) != SS_OK) {
        printf("FAIL ss_session_open: %s %s\n", ss_last_error_code(), ss_last_error_message());
        ss_client_destroy(client);
        return 1;
    }
    CUH(cuh.cuStreamCreate(&stream, 1));
    for (int f = 0; f < frames && failures == 0; f++) {
        ss_slot slot;
        ss_event ev;
        uint64_t seq = 0;
        ss_status st;
        double t0 = now_ms(), end = t0 + 30000;
        VkCommandBuffer cmd;
        while ((st = ss_acquire(session, stream, &slot)) == SS_BUSY && now_ms() < end) usleep(100);
        if (st != SS_OK) { printf("FAIL ss_acquire %s\n", ss_status_name(st)); failures++; break; }
        cmd = begin();
        for (uint32_t i = 0; i < info->plane_count; i++)
            ssvk_record_input(bridge, cmd, i, planes_img[i].image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL);
        VK(vkEndCommandBuffer(cmd));
        VK(ssvk_submit_input(bridge, queue, cmd, ++n, VK_NULL_HANDLE));
        if (ssvk_cuda_copy_in(cuda, stream, n, (uint64_t)(uintptr_t)slot.input) != SS_OK) DIE("ssvk_cuda_copy_in");
        if ((st = ss_submit(session, slot.index, NULL, stream, &seq)) != SS_OK) {
            printf("FAIL ss_submit %s\n", ss_status_name(st));
            failures++;
            break;
        }
        for (;;) {
            if (ss_poll(session, &ev) == SS_OK && ev.seq == seq) break;
            if (now_ms() > end) { printf("FAIL no answer for frame %llu\n", (unsigned long long)seq); failures++; break; }
            usleep(50);
        }
        if (failures) break;
        if (ev.kind != SS_EVENT_DONE) {
            printf("frame %llu: kind %d %s %s\n", (unsigned long long)seq, ev.kind, ev.code, ev.message);
            continue;
        }
        {
            const void *out;
            VkBufferImageCopy r = {0};
            if (ss_output(session, (uint32_t)ev.slot, stream, &out, NULL) != SS_OK) DIE("ss_output");
            if (ssvk_cuda_copy_out(cuda, stream, ++m, (uint64_t)(uintptr_t)out) != SS_OK) DIE("ssvk_cuda_copy_out");
            cmd = begin();
            ssvk_record_output(bridge, cmd, composite, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL);
            to_layout(cmd, composite, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL);
            r.imageSubresource.aspectMask = VK_IMAGE_ASPECT_COLOR_BIT;
            r.imageSubresource.layerCount = 1;
            r.imageExtent.width = W;
            r.imageExtent.height = H;
            r.imageExtent.depth = 1;
            vkCmdCopyImageToBuffer(cmd, composite, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, back->buf, 1, &r);
            to_layout(cmd, composite, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL);
            VK(vkEndCommandBuffer(cmd));
            vkResetFences(dev, 1, &fence);
            VK(ssvk_submit_output(bridge, queue, cmd, m, fence));
            VK(vkWaitForFences(dev, 1, &fence, VK_TRUE, 10000000000ull)); /* the test reads the composite */
            if (f >= 3) t[nt++] = now_ms() - t0;
            CUH(cuh.cuStreamSynchronize(stream));
            CUH(cuh.cuMemcpyDtoH_v2(ring_out, (unsigned long long)(uintptr_t)out, info->output_frame_bytes));
            if (memcmp(back->map, ring_out, info->output_frame_bytes)) {
                printf("FAIL frame %llu: the composite differs from the ring's output slot\n", (unsigned long long)seq);
                failures++;
            }
            for (uint64_t i = 3; i < info->output_frame_bytes; i += 4)
                if (ring_out[i] != 255) { printf("FAIL frame %llu: output not opaque\n", (unsigned long long)seq); failures++; break; }
            done++;
        }
        VK(vkDeviceWaitIdle(dev));
    }
    qsort(t, (size_t)nt, sizeof *t, cmp_double);
    printf("SESSION width=%u height=%u frames=%d done=%d\n", W, H, frames, done);
    if (nt) printf("TIMING frame p50_ms=%.3f p90_ms=%.3f (Vulkan copies to composite read back, service included)\n",
                   t[nt / 2], t[(nt * 9) / 10]);
    ss_session_close(session);
    ss_client_destroy(client);
    free(ring_out);
    free(t);
    return failures || done < frames / 2;
}
#endif

int main(int argc, char **argv) {
    int cuda_mode, frames = 0;
    uint64_t slot_bytes;
    ssvk_config cfg = {sizeof cfg};
    ssvk_bridge *bridge;
    ssvk_info info;
    image planes_img[SSVK_MAX_PLANES], composite;
    unsigned char *source[SSVK_MAX_PLANES], *expect_slot, *slot_cpu, *out_pattern;
    host_buffer stage, back;
    int fd, fd2;
    struct stat st;
    VkBuffer ibuf, obuf;
    VkDeviceMemory imem, omem;
    VkCommandBuffer cmd;
    VkFence fence;
    uint64_t n = 0, m = 0, value;
    int session_mode = argc == 6 && strcmp(argv[1], "session") == 0;
    if (argc == 5 && strcmp(argv[1], "vulkan") == 0 && strcmp(argv[4], "odd") == 0) odd_layout = 1, argc--;
    const char *address = session_mode ? argv[2] : NULL;
    if (session_mode) argv++, argc--; /* the rest as "cuda W H FRAMES" */
    if (argc < 4 || (strcmp(argv[1], "vulkan") != 0 && strcmp(argv[1], "cuda") != 0 && !session_mode) ||
        (strcmp(argv[1], "vulkan") != 0 && argc < 5)) {
        fprintf(stderr, "usage: ssvk_host vulkan W H [odd] | ssvk_host cuda W H FRAMES | ssvk_host session ADDRESS W H FRAMES\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    cuda_mode = strcmp(argv[1], "vulkan") != 0;
    W = (uint32_t)atoi(argv[2]);
    H = (uint32_t)atoi(argv[3]);
    if (cuda_mode) frames = atoi(argv[4]);
    setup(cuda_mode);
    slot_bytes = layout_slot_bytes();

    cfg.physical = phys;
    cfg.device = dev;
    cfg.width = W;
    cfg.height = H;
    cfg.channels = channels;
    cfg.channel_count = 8;
    cfg.input_slot_bytes = slot_bytes;
    cfg.output_format = SS_FORMAT_RGBA8;
    cfg.require_semaphore_export = cuda_mode;
    {   /* refusals first: an unknown format, a slot too small; nothing may stay allocated */
        ss_channel bad[8];
        ssvk_config c2 = cfg;
        memcpy(bad, channels, sizeof bad);
        bad[1].format = "r24_depth";
        c2.channels = bad;
        if (ssvk_create(&c2, &bridge) != VK_ERROR_FORMAT_NOT_SUPPORTED) DIE("an unknown format was accepted");
        c2.channels = channels;
        c2.input_slot_bytes = channels[7].offset + (uint64_t)W * H * 4 - 1; /* ids, the last plane, one byte short */
        if (ssvk_create(&c2, &bridge) != VK_ERROR_INITIALIZATION_FAILED) DIE("a short slot was accepted");
        printf("CHECK refusals ok last=\"%s\"\n", ssvk_last_error());
    }
    VK(ssvk_create(&cfg, &bridge));
    ssvk_get_info(bridge, &info);
    printf("BRIDGE planes=%u input_bytes=%llu output_bytes=%llu slot_bytes=%llu semaphores_exportable=%d copies=%u "
           "span_offset=%llu span_bytes=%llu\n",
           info.plane_count, (unsigned long long)info.input_bytes, (unsigned long long)info.output_bytes,
           (unsigned long long)slot_bytes, info.semaphores_exportable, info.copy_count,
           (unsigned long long)info.span_offset, (unsigned long long)info.span_bytes);
    for (uint32_t i = 0; i < info.plane_count; i++)
        printf("PLANE %s %s offset=%llu pitch=%u slot_offset=%llu slot_pitch=%u mirrored=%d\n", info.planes[i].channel,
               info.planes[i].format->name, (unsigned long long)info.planes[i].offset, info.planes[i].row_pitch,
               (unsigned long long)info.planes[i].slot_offset, info.planes[i].slot_pitch, info.planes[i].mirrored);

    /* the engine's frame: known planes uploaded into optimal-tiling images in the engine's formats */
    stage = host_buffer_new(info.input_bytes > info.output_bytes ? info.input_bytes : info.output_bytes);
    back = host_buffer_new(info.input_bytes > info.output_bytes ? info.input_bytes : info.output_bytes);
    expect_slot = calloc(1, slot_bytes);
    slot_cpu = calloc(1, slot_bytes);
    cmd = begin();
    for (uint32_t i = 0; i < info.plane_count; i++) {
        const ssvk_plane *p = &info.planes[i];
        uint64_t bytes = (uint64_t)W * H * p->format->pixel_bytes;
        VkBufferImageCopy r = {0};
        source[i] = malloc(bytes);
        fill_plane(source[i], p->format, bytes, 17 * i + 3);
        for (uint32_t y = 0; y < H; y++) /* the slot as the layout says, computed without the plan */
            memcpy(expect_slot + p->slot_offset + (uint64_t)y * p->slot_pitch,
                   source[i] + (uint64_t)y * W * p->format->pixel_bytes, (size_t)W * p->format->pixel_bytes);
        memcpy((unsigned char *)stage.map + p->offset, source[i], bytes); /* tight, at the plane's offset */
        planes_img[i] = image_new(p->format->vk);
        to_layout(cmd, planes_img[i].image, VK_IMAGE_LAYOUT_UNDEFINED, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL);
        r.bufferOffset = p->offset;
        r.imageSubresource.aspectMask = VK_IMAGE_ASPECT_COLOR_BIT;
        r.imageSubresource.layerCount = 1;
        r.imageExtent.width = W;
        r.imageExtent.height = H;
        r.imageExtent.depth = 1;
        vkCmdCopyBufferToImage(cmd, stage.buf, planes_img[i].image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, 1, &r);
        to_layout(cmd, planes_img[i].image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL);
    }
    composite = image_new(info.output_format);
    to_layout(cmd, composite.image, VK_IMAGE_LAYOUT_UNDEFINED, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL);
    run_now(cmd);

    /* 1. the bridge's copies, signalled on the GPU: rendered = 1 */
    cmd = begin();
    for (uint32_t i = 0; i < info.plane_count; i++)
        ssvk_record_input(bridge, cmd, i, planes_img[i].image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL);
    VK(vkEndCommandBuffer(cmd));
    fence = fence_new();
    VK(ssvk_submit_input(bridge, queue, cmd, ++n, fence));
    {
        VkSemaphoreWaitInfo wi = {VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO, NULL, 0, 1, &info.sems[SSVK_RENDERED], &n};
        VK(vkWaitSemaphores(dev, &wi, 5000000000ull));
        VK(vkGetSemaphoreCounterValue(dev, info.sems[SSVK_RENDERED], &value));
        if (value != 1) DIE("rendered is %llu after the first input copy", (unsigned long long)value);
        printf("CHECK timeline_signal ok rendered=%llu\n", (unsigned long long)value);
    }
    VK(vkWaitForFences(dev, 1, &fence, VK_TRUE, UINT64_MAX));

    /* 2. the input memory exported as an fd, imported again from a dup, read back */
    VK(ssvk_export_memory(bridge, 0, &fd));
    if (fstat(fd, &st) != 0) DIE("fstat of the exported fd");
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < info.input_bytes)
        DIE("the exported fd holds %lld bytes, the allocation %llu", (long long)st.st_size,
            (unsigned long long)info.input_bytes);
    printf("CHECK memory_fd ok fd=%d mode=%s fstat_size=%lld alloc_size=%llu\n", fd,
           S_ISREG(st.st_mode) ? "file" : S_ISCHR(st.st_mode) ? "chardev" : "other", (long long)st.st_size,
           (unsigned long long)info.input_bytes);
    fd2 = dup(fd);
    close(fd);
    VK(ssvk_import_buffer(phys, dev, fd2, info.input_bytes, &ibuf, &imem));
    memset(back.map, 0, info.input_bytes);
    cmd = begin();
    copy_buffer(cmd, ibuf, back.buf, info.input_bytes);
    run_now(cmd);
    for (uint32_t i = 0; i < info.plane_count; i++) {
        const ssvk_plane *p = &info.planes[i];
        uint64_t row = (uint64_t)W * p->format->pixel_bytes;
        for (uint32_t y = 0; y < H; y++)
            if (memcmp((unsigned char *)back.map + p->offset + (uint64_t)y * p->row_pitch, source[i] + y * row, row))
                DIE("plane %s row %u differs through the second import", p->channel, y);
    }
    printf("CHECK second_import ok planes=%u bytes=%llu\n", info.plane_count, (unsigned long long)info.input_bytes);

    /* 3. the plan, applied on the CPU as CUDA applies it (the mirrored span in one copy, then each other
     * plane), gives the layout's slot: every plane's rows where the layout puts them */
    memset(slot_cpu, 0, slot_bytes);
    memcpy(slot_cpu + info.span_offset, (unsigned char *)back.map + info.span_offset, info.span_bytes);
    for (uint32_t i = 0; i < info.plane_count; i++) {
        const ssvk_plane *p = &info.planes[i];
        if (p->mirrored) continue;
        for (uint32_t y = 0; y < H; y++)
            memcpy(slot_cpu + p->slot_offset + (uint64_t)y * p->slot_pitch,
                   (unsigned char *)back.map + p->offset + (uint64_t)y * p->row_pitch,
                   (size_t)W * p->format->pixel_bytes);
    }
    for (uint32_t i = 0; i < info.plane_count; i++) {
        const ssvk_plane *p = &info.planes[i];
        for (uint32_t y = 0; y < H; y++)
            if (memcmp(slot_cpu + p->slot_offset + (uint64_t)y * p->slot_pitch,
                       expect_slot + p->slot_offset + (uint64_t)y * p->slot_pitch, (size_t)W * p->format->pixel_bytes))
                DIE("the plan's slot differs from the layout's: plane %s row %u", p->channel, y);
    }
    printf("CHECK plan_matches_layout ok slot_bytes=%llu copies=%u\n", (unsigned long long)slot_bytes, info.copy_count);

    /* 4. the semaphores through a second handle, where the device exports them */
    if (info.semaphores_exportable) {
        VkSemaphoreTypeCreateInfo type = {VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO, NULL, VK_SEMAPHORE_TYPE_TIMELINE, 0};
        VkSemaphoreCreateInfo sci = {VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, &type};
        VkImportSemaphoreFdInfoKHR imp = {VK_STRUCTURE_TYPE_IMPORT_SEMAPHORE_FD_INFO_KHR};
        PFN_vkImportSemaphoreFdKHR import_fd = (PFN_vkImportSemaphoreFdKHR)vkGetDeviceProcAddr(dev, "vkImportSemaphoreFdKHR");
        VkSemaphoreSignalInfo sig = {VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO};
        VkSemaphore other;
        VK(ssvk_export_semaphore(bridge, SSVK_CONSUMED, &fd));
        VK(vkCreateSemaphore(dev, &sci, NULL, &other));
        imp.semaphore = other;
        imp.handleType = VK_EXTERNAL_SEMAPHORE_HANDLE_TYPE_OPAQUE_FD_BIT;
        imp.fd = fd;
        VK(import_fd(dev, &imp));
        sig.semaphore = other;
        sig.value = 1;
        VK(vkSignalSemaphore(dev, &sig)); /* consumed = 1 through the import, as CUDA would signal it */
        VK(vkGetSemaphoreCounterValue(dev, info.sems[SSVK_CONSUMED], &value));
        if (value != 1) DIE("consumed is %llu after a signal through its imported fd", (unsigned long long)value);
        vkDestroySemaphore(dev, other, NULL);
        printf("CHECK semaphore_fd ok consumed=%llu\n", (unsigned long long)value);
    } else {
        VkSemaphoreSignalInfo sig = {VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO, NULL, info.sems[SSVK_CONSUMED], 1};
        VK(vkSignalSemaphore(dev, &sig));
        printf("CHECK semaphore_fd skipped the device cannot export timeline semaphores (%s)\n",
               "VK_KHR_external_semaphore_fd");
    }

    /* 5. the output: a known frame written through a second import of the output memory (standing in
     * for CUDA), the composite copy submitted first and held on the GPU until stylized = 1 */
    out_pattern = malloc(info.output_frame_bytes);
    rng_state = 0xC0FFEEull;
    for (uint64_t i = 0; i < info.output_frame_bytes; i++) out_pattern[i] = (unsigned char)rnd();
    VK(ssvk_export_memory(bridge, 1, &fd));
    VK(ssvk_import_buffer(phys, dev, fd, info.output_bytes, &obuf, &omem));
    memcpy(stage.map, out_pattern, info.output_frame_bytes);
    cmd = begin();
    copy_buffer(cmd, stage.buf, obuf, info.output_frame_bytes);
    run_now(cmd);
    {
        VkBufferImageCopy r = {0};
        VkSemaphoreSignalInfo sig = {VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO, NULL, info.sems[SSVK_STYLIZED], 1};
        VkResult early;
        vkResetFences(dev, 1, &fence);
        cmd = begin();
        ssvk_record_output(bridge, cmd, composite.image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL);
        to_layout(cmd, composite.image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL);
        r.imageSubresource.aspectMask = VK_IMAGE_ASPECT_COLOR_BIT;
        r.imageSubresource.layerCount = 1;
        r.imageExtent.width = W;
        r.imageExtent.height = H;
        r.imageExtent.depth = 1;
        memset(back.map, 0, info.output_frame_bytes);
        vkCmdCopyImageToBuffer(cmd, composite.image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, back.buf, 1, &r);
        to_layout(cmd, composite.image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL);
        VK(vkEndCommandBuffer(cmd));
        VK(ssvk_submit_output(bridge, queue, cmd, ++m, fence));
        usleep(100000);
        early = vkGetFenceStatus(dev, fence);
        if (early != VK_NOT_READY) DIE("the composite ran before stylized was signalled (%d)", early);
        VK(vkSignalSemaphore(dev, &sig)); /* what CUDA's cuSignalExternalSemaphoresAsync does */
        VK(vkWaitForFences(dev, 1, &fence, VK_TRUE, 5000000000ull));
        if (memcmp(back.map, out_pattern, info.output_frame_bytes)) DIE("the composited frame differs");
        {
            VkSemaphoreWaitInfo wi = {VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO, NULL, 0, 1, &info.sems[SSVK_COMPOSITED], &m};
            VK(vkWaitSemaphores(dev, &wi, 5000000000ull));
            VK(vkGetSemaphoreCounterValue(dev, info.sems[SSVK_COMPOSITED], &value));
            if (value != 1) DIE("composited is %llu", (unsigned long long)value);
        }
        printf("CHECK output_gpu_wait ok held_until_signal=1 composited=%llu bytes=%llu\n", (unsigned long long)value,
               (unsigned long long)info.output_frame_bytes);
    }
    vkDestroyBuffer(dev, ibuf, NULL);
    vkFreeMemory(dev, imem, NULL);
    vkDestroyBuffer(dev, obuf, NULL);
    vkFreeMemory(dev, omem, NULL);

    if (cuda_mode) {
        /* the CUDA half: the ring as libstreamstyle's cuda-ipc backend makes it */
        const uint64_t align = 512, in_step = (slot_bytes + align - 1) / align * align,
                       out_step = (info.output_frame_bytes + align - 1) / align * align;
        const uint32_t slots = 3;
        unsigned long long ring;
        unsigned char handle[64];
        void *ctx, *stream, *ready[3], *t0[64], *t1[64];
        int cudev;
        char name[128];
        float *ms;
        ssvk_cuda *cuda;
        ss_status s;
        uint64_t in_ptr, out_ptr;
        if (frames < 1 || (frames > 64 && !session_mode)) DIE("FRAMES must be 1..64");
        if (!(cuh.lib = dlopen("libcuda.so.1", RTLD_NOW))) {
            printf("SKIP no CUDA driver (libcuda.so.1)\n");
            return 3;
        }
#define CUH_LOAD(f) if (!(*(void **)&cuh.f = dlsym(cuh.lib, #f))) DIE("libcuda lacks " #f);
        CUH_LOAD(cuInit) CUH_LOAD(cuDeviceGet) CUH_LOAD(cuDeviceGetName) CUH_LOAD(cuDevicePrimaryCtxRetain)
        CUH_LOAD(cuCtxSetCurrent) CUH_LOAD(cuMemAlloc_v2) CUH_LOAD(cuMemFree_v2) CUH_LOAD(cuIpcGetMemHandle)
        CUH_LOAD(cuEventCreate) CUH_LOAD(cuEventRecord) CUH_LOAD(cuEventSynchronize) CUH_LOAD(cuEventElapsedTime_v2)
        CUH_LOAD(cuStreamCreate) CUH_LOAD(cuStreamSynchronize) CUH_LOAD(cuMemcpyDtoH_v2) CUH_LOAD(cuMemcpyHtoD_v2)
        CUH_LOAD(cuMemsetD8Async)
        CUH(cuh.cuInit(0));
        CUH(cuh.cuDeviceGet(&cudev, 0));
        CUH(cuh.cuDeviceGetName(name, sizeof name, cudev));
        CUH(cuh.cuDevicePrimaryCtxRetain(&ctx, cudev));
        CUH(cuh.cuCtxSetCurrent(ctx)); /* as the CUDA runtime would have; the bridge works in it */
        printf("CUDA device=\"%s\"\n", name);
        if ((s = ssvk_cuda_open(bridge, 0, &cuda)) != SS_OK) DIE("ssvk_cuda_open -> %d", s);
        ssvk_cuda_pointers(cuda, &in_ptr, &out_ptr);
        if (session_mode) {
#ifdef SSVK_WITH_CLIENT
            int rc = run_session(address, frames, bridge, &info, cuda, slot_bytes, planes_img, composite.image, &back,
                                 fence, n, m);
            ssvk_cuda_close(cuda);
            printf(rc ? "RESULT failed\n" : "RESULT ok\n");
            return rc;
#else
            DIE("session mode: this ssvk_host was built without libstreamstyle (%s)", address);
#endif
        }
        printf("CHECK cuda_import ok input=0x%llx output=0x%llx\n", (unsigned long long)in_ptr, (unsigned long long)out_ptr);
        CUH(cuh.cuMemAlloc_v2(&ring, slots * (in_step + out_step)));
        CUH(cuh.cuIpcGetMemHandle(handle, ring)); /* the ring is memory the service can open */
        CUH(cuh.cuStreamCreate(&stream, 1 /* non-blocking */));
        for (uint32_t i = 0; i < slots; i++) CUH(cuh.cuEventCreate(&ready[i], 0x2 | 0x4)); /* no timing, interprocess */
        for (int f = 0; f < frames; f++) {
            CUH(cuh.cuEventCreate(&t0[f], 0));
            CUH(cuh.cuEventCreate(&t1[f], 0));
        }
        for (int f = 0; f < frames; f++) {
            uint32_t slot = (uint32_t)f % slots;
            unsigned long long dst = ring + slot * in_step;
            /* the engine's frame n: the bridge's copies on Vulkan, waiting for CUDA's previous read */
            cmd = begin();
            for (uint32_t i = 0; i < info.plane_count; i++)
                ssvk_record_input(bridge, cmd, i, planes_img[i].image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL);
            VK(vkEndCommandBuffer(cmd));
            vkResetFences(dev, 1, &fence);
            /* n continues from the Vulkan checks: consumed was set to 1 there, rendered is 1 */
            VK(ssvk_submit_input(bridge, queue, cmd, ++n, fence));
            VK(vkWaitForFences(dev, 1, &fence, VK_TRUE, UINT64_MAX)); /* the test's pacing, so t0..t1 is the copy */
            CUH(cuh.cuMemsetD8Async(dst, 0xA5, slot_bytes, stream)); /* poison: an unwritten byte fails */
            /* CUDA: wait for rendered = n on the stream (the host does not wait), copy, ready */
            CUH(cuh.cuEventRecord(t0[f], stream));
            if ((s = ssvk_cuda_copy_in(cuda, stream, n, dst)) != SS_OK) DIE("ssvk_cuda_copy_in -> %d", s);
            CUH(cuh.cuEventRecord(t1[f], stream));
            CUH(cuh.cuEventRecord(ready[slot], stream));
            CUH(cuh.cuStreamSynchronize(stream));
            vkFreeCommandBuffers(dev, pool, 1, &cmd);
        }
        ms = calloc((size_t)frames, sizeof *ms);
        for (int f = 0; f < frames; f++) CUH(cuh.cuEventElapsedTime_v2(&ms[f], t0[f], t1[f]));
        for (uint32_t k = 0; k < slots && k < (uint32_t)frames; k++) {
            memset(slot_cpu, 0, slot_bytes);
            CUH(cuh.cuMemcpyDtoH_v2(slot_cpu, ring + k * in_step, slot_bytes));
            for (uint32_t i = 0; i < info.plane_count; i++) { /* gaps between planes hold the poison */
                const ssvk_plane *p = &info.planes[i];
                for (uint32_t y = 0; y < H; y++)
                    if (memcmp(slot_cpu + p->slot_offset + (uint64_t)y * p->slot_pitch,
                               expect_slot + p->slot_offset + (uint64_t)y * p->slot_pitch,
                               (size_t)W * p->format->pixel_bytes))
                        DIE("ring slot %u: plane %s row %u differs from what Vulkan wrote", k, p->channel, y);
            }
        }
        qsort(ms, (size_t)frames, sizeof *ms, cmp_float);
        printf("CHECK cuda_copy_in ok frames=%d slot_bytes=%llu\n", frames, (unsigned long long)slot_bytes);
        printf("TIMING copy_in width=%u height=%u bytes=%llu p50_ms=%.4f p90_ms=%.4f min_ms=%.4f GBps=%.0f\n", W, H,
               (unsigned long long)slot_bytes, ms[frames / 2], ms[(frames * 9) / 10], ms[0],
               slot_bytes / (ms[frames / 2] * 1e6));

        /* the output: a known stylized frame in ring output slot 0, copied back by CUDA after
         * composited = m - 1, composited by Vulkan after the GPU-side wait on stylized = m */
        {
            unsigned long long out_slot = ring + slots * in_step;
            VkBufferImageCopy r = {0};
            double t_submit, t_done;
            for (uint64_t i = 0; i < info.output_frame_bytes; i++) out_pattern[i] = (unsigned char)(i * 31 + 7);
            CUH(cuh.cuMemcpyHtoD_v2(out_slot, out_pattern, info.output_frame_bytes));
            vkResetFences(dev, 1, &fence);
            cmd = begin();
            ssvk_record_output(bridge, cmd, composite.image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL);
            to_layout(cmd, composite.image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL);
            r.imageSubresource.aspectMask = VK_IMAGE_ASPECT_COLOR_BIT;
            r.imageSubresource.layerCount = 1;
            r.imageExtent.width = W;
            r.imageExtent.height = H;
            r.imageExtent.depth = 1;
            memset(back.map, 0, info.output_frame_bytes);
            vkCmdCopyImageToBuffer(cmd, composite.image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, back.buf, 1, &r);
            VK(vkEndCommandBuffer(cmd));
            t_submit = now_ms();
            VK(ssvk_submit_output(bridge, queue, cmd, ++m, fence)); /* queued first: held on the GPU */
            if ((s = ssvk_cuda_copy_out(cuda, stream, m, out_slot)) != SS_OK) DIE("ssvk_cuda_copy_out -> %d", s);
            VK(vkWaitForFences(dev, 1, &fence, VK_TRUE, 5000000000ull));
            t_done = now_ms();
            if (memcmp(back.map, out_pattern, info.output_frame_bytes)) DIE("the composited CUDA output differs");
            printf("CHECK cuda_copy_out ok bytes=%llu composite_after_ms=%.3f\n",
                   (unsigned long long)info.output_frame_bytes, t_done - t_submit);
        }
        ssvk_cuda_close(cuda);
        CUH(cuh.cuMemFree_v2(ring));
        free(ms);
    }
    VK(vkDeviceWaitIdle(dev));
    host_buffer_free(&stage);
    host_buffer_free(&back);
    ssvk_destroy(bridge);
    for (uint32_t i = 0; i < info.plane_count; i++) {
        vkDestroyImage(dev, planes_img[i].image, NULL);
        vkFreeMemory(dev, planes_img[i].mem, NULL);
        free(source[i]);
    }
    vkDestroyImage(dev, composite.image, NULL);
    vkFreeMemory(dev, composite.mem, NULL);
    vkDestroyFence(dev, fence, NULL);
    vkDestroyCommandPool(dev, pool, NULL);
    vkDestroyDevice(dev, NULL);
    vkDestroyInstance(inst, NULL);
    free(expect_slot);
    free(slot_cpu);
    free(out_pattern);
    printf("RESULT ok\n");
    return 0;
}
