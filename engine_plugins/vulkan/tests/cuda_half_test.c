/* cuda_half_test: the bridge's CUDA half (src/cuda_bridge.c) against fake_cuda.c's libcuda.so.1, on a
 * machine without a GPU. The Vulkan half is replaced by memfds (what lavapipe's opaque fds are), so
 * this runs where no device exports semaphores. It checks: the import (handle types, dedicated flag,
 * sizes), every plane copied into the slot at the layout's offsets and pitches from the bridge's
 * pitches, copy_in waiting on rendered >= n and signalling consumed = n, copy_out waiting on
 * composited >= m - 1 and signalling stylized = m, the context pushed and popped in balance, and
 * everything released on close. Run without the fake on the library path it checks SS_NO_CUDA.
 *   cuda_half_test fake | cuda_half_test nodriver */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bridge.h"

#define W 67u
#define H 35u
#define FAIL(...) do { printf("FAIL " __VA_ARGS__); printf(" (%s)\n", ssvk_last_error()); return 1; } while (0)

static char err[256];
const char *ssvk_last_error(void) { return err; }
void ssvk_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, sizeof err, fmt, ap);
    va_end(ap);
}

static int mem_fd[2];
VkResult ssvk_export_memory(ssvk_bridge *b, int output, int *fd) { (void)b; *fd = dup(mem_fd[output != 0]); return VK_SUCCESS; }
VkResult ssvk_export_semaphore(ssvk_bridge *b, ssvk_semaphore which, int *fd) {
    (void)b; (void)which;
    *fd = open("/dev/null", O_RDONLY);
    return VK_SUCCESS;
}

static const ssvk_format F8 = {"rgba16f", VK_FORMAT_R16G16B16A16_SFLOAT, 8}, F4 = {"r32f", VK_FORMAT_R32_SFLOAT, 4},
                         F2 = {"rg8_unorm", VK_FORMAT_R8G8_UNORM, 2};

int main(int argc, char **argv) {
    struct ssvk_bridge b;
    ssvk_cuda *cuda = NULL;
    ss_status s;
    unsigned char *in, *out, *slot, *ring_out;
    uint64_t slot_bytes;
    void *lib;
    void (*state)(int[10]);
    unsigned long long (*sem)(int);
    void (*signal)(int, unsigned long long);
    int z[10];
    memset(&b, 0, sizeof b);
    b.width = W;
    b.height = H;
    /* As vk_bridge.c plans it: color and roughness mirror the slot (one copy of their span, the gap
     * between them included); depth, with a pitch a plane could not mirror, lies after the span in the
     * buffer with a 256-byte pitch, and after the span in the slot, with padding that must stay. */
    b.info.plane_count = 3;
    b.info.planes[0] = (ssvk_plane){&F8, "color", 0, W * 8, 0, W * 8, 1};
    b.info.planes[1] = (ssvk_plane){&F2, "roughness", W * H * 8 + 256, W * 2, W * H * 8 + 256, W * 2, 1};
    b.info.span_offset = 0;
    b.info.span_bytes = W * H * 8 + 256 + W * 2 * H;
    b.info.planes[2] = (ssvk_plane){&F4, "depth", (b.info.span_bytes + 255) / 256 * 256, 512,
                                    b.info.span_bytes + 64, W * 4 + 2, 0};
    b.info.copy_count = 2;
    b.info.input_bytes = b.info.planes[2].offset + 512 * H;
    b.info.output_frame_bytes = W * H * 4;
    b.info.output_bytes = (b.info.output_frame_bytes + 4095) / 4096 * 4096;
    slot_bytes = b.info.planes[2].slot_offset + (uint64_t)(W * 4 + 2) * H;
    b.info.semaphores_exportable = 0;
    if (argc > 1 && strcmp(argv[1], "nodriver") == 0) {
        b.info.semaphores_exportable = 1;
        s = ssvk_cuda_open(&b, 0, &cuda);
        if (s != SS_NO_CUDA) FAIL("without a driver ssvk_cuda_open -> %d, not SS_NO_CUDA", s);
        printf("CHECK no_driver ok \"%s\"\nRESULT ok\n", ssvk_last_error());
        return 0;
    }
    if ((s = ssvk_cuda_open(&b, 0, &cuda)) != SS_INVALID_ARGUMENT) FAIL("unexportable semaphores accepted (%d)", s);
    b.info.semaphores_exportable = 1;
    mem_fd[0] = memfd_create("ssvk-in", 0);
    mem_fd[1] = memfd_create("ssvk-out", 0);
    if (ftruncate(mem_fd[0], (off_t)b.info.input_bytes) || ftruncate(mem_fd[1], (off_t)b.info.output_bytes)) FAIL("ftruncate");
    in = mmap(NULL, b.info.input_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, mem_fd[0], 0);
    out = mmap(NULL, b.info.output_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, mem_fd[1], 0);
    srand(7);
    for (uint64_t i = 0; i < b.info.input_bytes; i++) in[i] = (unsigned char)(rand() & 0xff);
    if ((s = ssvk_cuda_open(&b, 0, &cuda)) != SS_OK) FAIL("ssvk_cuda_open -> %d", s);
    if (!(lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD)) || !(*(void **)&state = dlsym(lib, "fake_cuda_state")) ||
        !(*(void **)&sem = dlsym(lib, "fake_cuda_semaphore")) || !(*(void **)&signal = dlsym(lib, "fake_cuda_signal")))
        FAIL("the fake libcuda is not the one loaded");
    state(z);
    if (z[0] != 0 || z[1] != 1 || z[9] != 1 || z[6] != 0)
        FAIL("after open: push depth %d, retains %d, streams %d, misuse %d", z[0], z[1], z[9], z[6]);
    if (!ssvk_cuda_stream(cuda)) FAIL("no stream of its own");
    printf("CHECK open ok\n");

    slot = malloc(slot_bytes);
    memset(slot, 0xA5, slot_bytes);
    signal(SSVK_RENDERED, 1); /* Vulkan's submit of the first input copy */
    if ((s = ssvk_cuda_copy_in(cuda, NULL, 1, (uint64_t)(uintptr_t)slot)) != SS_OK) FAIL("copy_in -> %d", s);
    {   /* the slot expected byte for byte: the span as in the buffer, depth's rows, the rest untouched */
        unsigned char *want = malloc(slot_bytes);
        memset(want, 0xA5, slot_bytes);
        memcpy(want + b.info.span_offset, in + b.info.span_offset, b.info.span_bytes);
        for (uint32_t y = 0; y < H; y++)
            memcpy(want + b.info.planes[2].slot_offset + (uint64_t)y * b.info.planes[2].slot_pitch,
                   in + b.info.planes[2].offset + (uint64_t)y * b.info.planes[2].row_pitch, W * 4);
        for (uint64_t i = 0; i < slot_bytes; i++)
            if (slot[i] != want[i]) FAIL("slot byte %llu is %u, not %u", (unsigned long long)i, slot[i], want[i]);
        free(want);
    }
    state(z);
    if (z[5] != 0 || sem(SSVK_CONSUMED) != 1) FAIL("copy_in 1: unmet %d, consumed %llu", z[5], sem(SSVK_CONSUMED));
    if (z[7] != 1 || z[8] != 1) FAIL("copy_in 1: %d linear and %d 2D copies, not 1 and 1", z[7], z[8]);
    printf("CHECK copy_in ok consumed=%llu copies=%d\n", sem(SSVK_CONSUMED), z[7] + z[8]);
    if ((s = ssvk_cuda_copy_in(cuda, NULL, 2, (uint64_t)(uintptr_t)slot)) != SS_OK) FAIL("copy_in 2 -> %d", s);
    state(z);
    if (z[5] != 1) FAIL("copy_in 2 did not wait on rendered >= 2 (unmet %d)", z[5]);
    printf("CHECK copy_in_waits_rendered ok\n");

    ring_out = malloc(b.info.output_frame_bytes);
    for (uint64_t i = 0; i < b.info.output_frame_bytes; i++) ring_out[i] = (unsigned char)(i * 13 + 1);
    if ((s = ssvk_cuda_copy_out(cuda, NULL, 1, (uint64_t)(uintptr_t)ring_out)) != SS_OK) FAIL("copy_out -> %d", s);
    state(z);
    if (memcmp(out, ring_out, b.info.output_frame_bytes) || sem(SSVK_STYLIZED) != 1 || z[5] != 1)
        FAIL("copy_out 1: bytes, stylized %llu or unmet %d", sem(SSVK_STYLIZED), z[5]);
    if ((s = ssvk_cuda_copy_out(cuda, NULL, 2, (uint64_t)(uintptr_t)ring_out)) != SS_OK) FAIL("copy_out 2 -> %d", s);
    state(z);
    if (z[5] != 2 || sem(SSVK_STYLIZED) != 2) FAIL("copy_out 2 did not wait on composited >= 1 (unmet %d)", z[5]);
    printf("CHECK copy_out ok stylized=%llu\n", sem(SSVK_STYLIZED));
    if (ssvk_cuda_copy_out(cuda, NULL, 2, (uint64_t)(uintptr_t)ring_out) != SS_CUDA_FAILED || !strstr(ssvk_last_error(), "CUDA_ERROR_FAKE"))
        FAIL("a failing CUDA call was not reported");
    printf("CHECK failure_reported ok \"%s\"\n", ssvk_last_error());

    ssvk_cuda_close(cuda);
    state(z);
    if (z[0] != 0 || z[1] != 0 || z[2] != 2 || z[3] != 2 || z[4] != SSVK_SEMAPHORES || z[6] != 0 || z[9] != 0)
        FAIL("after close: depth %d retains %d frees %d memories %d semaphores %d misuse %d streams %d", z[0], z[1], z[2],
             z[3], z[4], z[6], z[9]);
    printf("CHECK close ok\n");
    munmap(in, b.info.input_bytes);
    munmap(out, b.info.output_bytes);
    close(mem_fd[0]);
    close(mem_fd[1]);
    free(slot);
    free(ring_out);
    printf("RESULT ok\n");
    return 0;
}
