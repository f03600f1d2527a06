/* cuda_e2e_test: libstreamstyle's cuda-ipc backend against a service on the GPU (tests/test_c_client.py,
 * `gpu` marker). ss_cuda_e2e_test ADDRESS WIDTH HEIGHT FRAMES [DIR]
 *
 * With DIR: the session opens with seed 11, each frame's depth differs (row f moved), and each
 * frame's input slot and output slot are written to DIR/in<f>.bin and DIR/out<f>.bin, for the test to
 * run the same frames through the Python client and compare the outputs byte for byte.
 *
 * Plays an engine that renders with CUDA: writes a frame's G-buffers into the device slot with a
 * device-to-device copy on its stream (from a copy of the frame uploaded once), signals ready on that
 * stream, and reads the output after its stream waited on done.
 * The copies and the final read are this test's; the library itself never syncs. Prints the frame-path
 * call timings and the client's overhead: from ss_submit to the done event seen by ss_poll, minus
 * the service's total_ms ("OVERHEAD p50_us= p99_us="). The G-buffers are the reference layout's
 * planes with plausible values (the library dlopens the driver; so does this test). */
#define _GNU_SOURCE /* getrusage(RUSAGE_THREAD), timing.h */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "streamstyle.h"
#include "timing.h"

/* Frames left out of the overhead: the I/O thread and the service learn the frame rhythm over the
 * first few frames (the median of the last 8 intervals), and until then a submit or a frame may
 * find them asleep. benchmarks/handoff_probe.py leaves out 20 too. */
#define WARMUP 20

typedef int (*cu_init_t)(unsigned);
typedef int (*cu_device_get_t)(int *, int);
typedef int (*cu_retain_t)(void **, int);
typedef int (*cu_set_current_t)(void *);
typedef int (*cu_copy_htod_t)(unsigned long long, const void *, size_t);
typedef int (*cu_copy_dtoh_t)(void *, unsigned long long, size_t);
typedef int (*cu_copy_dtod_t)(unsigned long long, unsigned long long, size_t);
typedef int (*cu_alloc_t)(unsigned long long *, size_t);
typedef int (*cu_ctx_sync_t)(void);

static void report_us(const char *name, double *v, int n) {
    if (n == 0) return;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    printf("%s n=%d p50_us=%.2f p99_us=%.2f max_us=%.2f\n", name, n, v[n / 2], v[(int)(n * 0.99)], v[n - 1]);
}

static int write_bin(const char *dir, const char *what, int i, const void *data, size_t n) {
    char path[4096];
    FILE *f;
    size_t wrote;
    snprintf(path, sizeof path, "%s/%s%d.bin", dir, what, i);
    if (!(f = fopen(path, "wb"))) return 0;
    wrote = fwrite(data, 1, n, f);
    return fclose(f) == 0 && wrote == n;
}

static uint16_t half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
    if (exp < 113) return (uint16_t)sign;
    return (uint16_t)(sign | ((exp - 112) << 10) | (mant >> 13));
}

int main(int argc, char **argv) {
    static const struct { const char *name, *format, *encoding; uint32_t bytes, first; } spec[SS_REFERENCE_CHANNEL_COUNT] = SS_REFERENCE_CHANNELS;
    ss_channel ch[SS_REFERENCE_CHANNEL_COUNT];
    uint64_t offset = 0, last = 0;
    unsigned char *frame, *out;
    ss_client_config cc;
    ss_session_config cfg;
    ss_client *c = NULL;
    ss_session *s = NULL;
    int w, h, frames, done = 0, failures = 0;
    double *overhead;
    int *over_frame;
    int n_over = 0;
    void *lib, *ctx;
    int dev;
    cu_copy_htod_t htod;
    cu_copy_dtoh_t dtoh;
    cu_copy_dtod_t dtod;
    cu_alloc_t dalloc;
    unsigned long long dframe = 0; /* the frame on the device: each slot is written from it, as a render would */
    const char *dump;
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: ss_cuda_e2e_test ADDRESS WIDTH HEIGHT FRAMES [DIR]\n");
        return 2;
    }
    dump = argc == 6 ? argv[5] : NULL;
    w = atoi(argv[2]);
    h = atoi(argv[3]);
    frames = atoi(argv[4]);
    lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        printf("SKIP no CUDA driver\n");
        return 3;
    }
    htod = (cu_copy_htod_t)(uintptr_t)dlsym(lib, "cuMemcpyHtoD_v2");
    dtoh = (cu_copy_dtoh_t)(uintptr_t)dlsym(lib, "cuMemcpyDtoH_v2");
    dtod = (cu_copy_dtod_t)(uintptr_t)dlsym(lib, "cuMemcpyDtoD_v2");
    dalloc = (cu_alloc_t)(uintptr_t)dlsym(lib, "cuMemAlloc_v2");
    ((cu_init_t)(uintptr_t)dlsym(lib, "cuInit"))(0);
    ((cu_device_get_t)(uintptr_t)dlsym(lib, "cuDeviceGet"))(&dev, 0);
    ((cu_retain_t)(uintptr_t)dlsym(lib, "cuDevicePrimaryCtxRetain"))(&ctx, dev);
    ((cu_set_current_t)(uintptr_t)dlsym(lib, "cuCtxSetCurrent"))(ctx); /* as the runtime would have */

    for (int i = 0; i < SS_REFERENCE_CHANNEL_COUNT; i++) {
        memset(&ch[i], 0, sizeof ch[i]);
        ch[i].name = spec[i].name;
        ch[i].format = spec[i].format;
        ch[i].encoding = spec[i].encoding;
        ch[i].first = spec[i].first;
        if (spec[i].first) { ch[i].offset = last; continue; }
        ch[i].offset = last = offset;
        offset = (offset + (uint64_t)w * h * spec[i].bytes + SS_REFERENCE_PLANE_ALIGN - 1) / SS_REFERENCE_PLANE_ALIGN * SS_REFERENCE_PLANE_ALIGN;
    }
    frame = calloc(1, offset);
    out = malloc((size_t)w * h * 4);
    for (int px = 0; px < w * h; px++) {
        float d = 1.0f + (float)(px % 97) / 10.0f;
        uint16_t *color = (uint16_t *)(void *)(frame + ch[0].offset + 8 * (size_t)px);
        uint16_t *normal = (uint16_t *)(void *)(frame + ch[2].offset + 8 * (size_t)px);
        memcpy(frame + ch[1].offset + 4 * (size_t)px, &d, 4);
        for (int k = 0; k < 4; k++) {
            color[k] = half((float)((px * (k + 3)) % 255) / 255.0f);
            normal[k] = half(k == 1 ? 1.0f : 0.0f);
        }
        memset(frame + ch[3].offset + 4 * (size_t)px, (px * 7) & 0xff, 4);
        memset(frame + ch[4].offset + 2 * (size_t)px, (px * 3) & 0xff, 2);
    }

    if (dalloc(&dframe, offset) != 0 || htod(dframe, frame, offset) != 0) {
        printf("FAIL device frame\n");
        return 1;
    }

    memset(&cc, 0, sizeof cc);
    cc.size = sizeof cc;
    cc.address = argv[1];
    cc.name = "c-cuda-e2e";
    cc.timeout_ms = 120000; /* the first open captures the session's graph */
    if (ss_client_create(&cc, &c) != SS_OK) {
        printf("FAIL create: %s %s\n", ss_last_error_code(), ss_last_error_message());
        return 1;
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.size = sizeof cfg;
    cfg.width = (uint32_t)w;
    cfg.height = (uint32_t)h;
    cfg.channels = ch;
    cfg.channel_count = SS_REFERENCE_CHANNEL_COUNT;
    cfg.input_slot_bytes = offset;
    cfg.backend = SS_BACKEND_CUDA_IPC;
    cfg.slots = 3;
    cfg.device = 0;
    ss_params_init(&cfg.params);
    if (dump) cfg.seed = 11;
    if (ss_session_open(c, &cfg, &s) != SS_OK) {
        printf("FAIL open: %s %s\n", ss_last_error_code(), ss_last_error_message());
        ss_client_destroy(c);
        return 1;
    }
    overhead = calloc((size_t)frames + 1, sizeof(double));
    over_frame = calloc((size_t)frames + 1, sizeof(int));
    for (int f = 0; f < frames; f++) {
        ss_slot slot;
        ss_event ev;
        uint64_t seq = 0;
        double submitted, end = now_us() + 30e6;
        ss_status st;
        for (;;) {
            st = timed_acquire(s, &slot);
            if (st != SS_BUSY || now_us() > end) break;
        }
        if (st != SS_OK) { printf("FAIL acquire %s\n", ss_status_name(st)); failures++; break; }
        if (dump) { /* this frame's own depth row, uploaded, and its input kept */
            for (int px = 0; px < w; px++) {
                float d = 2.0f + (float)f;
                memcpy(frame + ch[1].offset + 4 * ((size_t)(f % h) * w + px), &d, 4);
            }
            if (htod(dframe, frame, offset) != 0 || !write_bin(dump, "in", f, frame, offset)) {
                printf("FAIL dump input\n");
                failures++;
                break;
            }
        }
        if (dtod((unsigned long long)(uintptr_t)slot.input, dframe, offset) != 0) { printf("FAIL copy\n"); failures++; break; }
        st = timed_submit(s, slot.index, NULL, &seq);
        submitted = now_us();
        if (st != SS_OK) { printf("FAIL submit %s\n", ss_status_name(st)); failures++; break; }
        for (;;) {
            st = timed_poll(s, &ev);
            if (st == SS_OK && ev.seq == seq) break;
            if (now_us() > end) { printf("FAIL no answer\n"); failures++; goto out; }
        }
        if (ev.kind != SS_EVENT_DONE) {
            printf("frame %llu: kind %d %s %s\n", (unsigned long long)seq, ev.kind, ev.code, ev.message);
            continue;
        }
        if (f >= WARMUP) { /* past the warm-up: the I/O thread and the service learn the frame rhythm first */
            overhead[n_over] = (now_us() - submitted) - ev.total_ms * 1000.0;
            over_frame[n_over++] = f;
        }
        {
            const void *p;
            uint64_t n;
            int opaque = 1;
            st = timed_output(s, (uint32_t)ev.slot, &p, &n);
            if (st != SS_OK || dtoh(out, (unsigned long long)(uintptr_t)p, (size_t)w * h * 4) != 0) {
                printf("FAIL output\n");
                failures++;
                break;
            }
            for (int i = 0; i < w * h; i++) opaque &= out[4 * i + 3] == 255;
            if (!opaque) { printf("FAIL output not opaque\n"); failures++; }
            if (dump) {
                unsigned char *whole = malloc((size_t)n);
                if (!whole || dtoh(whole, (unsigned long long)(uintptr_t)p, (size_t)n) != 0 ||
                    !write_bin(dump, "out", f, whole, (size_t)n)) {
                    printf("FAIL dump output\n");
                    failures++;
                }
                free(whole);
            }
        }
        done++;
    }
out:
    printf("cuda-ipc %dx%d: %d of %d frames done\n", w, h, done, frames);
    report_calls();
    {
        ss_client_info ci;
        memset(&ci, 0, sizeof ci);
        ci.size = sizeof ci;
        if (ss_client_get_info(c, &ci) == SS_OK)
            printf("CLIENT period_ms=%.3f submits=%llu wakes=%llu unwoken=%llu spun_us=%llu\n", ci.period_ms,
                   (unsigned long long)ci.submits, (unsigned long long)ci.wakes, (unsigned long long)ci.unwoken,
                   (unsigned long long)ci.spun_us);
    }
    {   /* the slowest frames, by index: a p99 of a few hundred frames is its few worst */
        double *copy = malloc(sizeof(double) * (size_t)(n_over + 1));
        memcpy(copy, overhead, sizeof(double) * (size_t)n_over);
        report_us("OVERHEAD", copy, n_over);
        free(copy);
        for (int k = 0; k < 5 && k < n_over; k++) {
            int worst = 0;
            for (int i = 1; i < n_over; i++) if (overhead[i] > overhead[worst]) worst = i;
            printf("WORST frame=%d overhead_us=%.1f\n", over_frame[worst], overhead[worst]);
            overhead[worst] = -1e30;
        }
    }
    ss_session_close(s);
    ss_client_destroy(c);
    free(frame); free(out); free(overhead); free(over_frame);
    if (done != frames) failures++;
    printf(failures ? "RESULT failed %d\n" : "RESULT ok\n", failures);
    return failures ? 1 : 0;
}
