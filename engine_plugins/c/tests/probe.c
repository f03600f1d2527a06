/* probe: where a frame's round trip goes, from libstreamstyle's side (benchmarks/handoff_probe.py
 * drives it and joins its lines with the service's own timestamps; CLOCK_MONOTONIC is one clock for
 * every process on a host).
 *
 *   ss_probe ADDRESS BACKEND WIDTH HEIGHT FRAMES [INTERVAL_MS [POLL]]
 *
 * BACKEND is shm or cuda-ipc (cuda-ipc copies the frame in from device memory with cuMemcpyDtoD,
 * as an engine renders into its slot, before the timed part; SS_PROBE_HOST_UPLOAD=1 uploads it from
 * the host with cuMemcpyHtoD instead, which at 1080p takes ~7 ms and jitters by milliseconds). Per frame: acquire (retried while busy), the frame copied in,
 * ss_submit timed, then ss_poll called until the frame's answer, as a render thread waiting for it
 * would (POLL "spin": back to back; "yield", the default: sched_yield between calls, so that on a
 * machine with no idle CPU the other threads still run); then it waits INTERVAL_MS (default 0) from the frame's start, as a game paced by its frame
 * rate leaves everything idle between frames. One line per frame:
 *   FRAME seq= submit0= submit1= sent= received= seen= total_ms= model_ms= woke=
 * (nanoseconds; sent/received are the I/O thread's, from the event; woke: 1 if that submit had to
 * wake the I/O thread), then summaries:
 *   TIMING <call> n= p50_us= p99_us= max_us=      each frame-path call
 *   SPLIT <part> n= p50_us= p99_us=               submit->sent, sent->received minus the service's
 *                                                 total_ms, received->seen
 *   OVERHEAD n= p50_us= p99_us=                   submit to answer seen, minus total_ms
 * then the client's CPU cost: CLIENT spun_us= period_ms= cpu_ms= wall_ms= (the I/O thread's time awake
 * anticipating the frame rhythm, the rhythm it learned, and this process's CPU and wall time).
 * SS_PROBE_NO_ANTICIPATION=1 in the environment opens the client with SS_CLIENT_NO_ANTICIPATION,
 * SS_PROBE_NO_DOORBELL=1 with SS_CLIENT_NO_DOORBELL (ZeroMQ only).
 * The first 5 frames (warm-up) are left out of the summaries. Last line: RESULT ok / RESULT failed.
 *
 *   ss_probe wake N IDLE_US
 *
 * What one thread-to-thread hand-off costs on this machine: a thread blocked in poll() on an
 * eventfd (as libstreamstyle's I/O thread and libzmq's threads block) is woken N times by another
 * that idled IDLE_US first (so that idle CPUs have gone to sleep, as between frames), and then
 * keeps running (as a render thread does), or goes back to sleep:
 *   WAKE <how> n= p50_us= p99_us= max_us=
 * A frame's round trip through libstreamstyle and the service has seven such hand-offs
 * (docs/engines.md, "Where a frame's time goes"). */
#define _POSIX_C_SOURCE 200809L
#include <dlfcn.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/resource.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include "streamstyle.h"

#define WARMUP 5

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef struct series {
    const char *kind, *name;
    double *v;
    int n;
} series;

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void add(series *s, double us) { s->v[s->n++] = us; }

static void report(series *s) {
    printf("%s%s%s n=%d", s->kind, s->name ? " " : "", s->name ? s->name : "", s->n);
    if (s->n > 0) {
        qsort(s->v, (size_t)s->n, sizeof *s->v, cmp);
        printf(" p50_us=%.2f p99_us=%.2f max_us=%.2f", s->v[s->n / 2], s->v[(int)(s->n * 0.99)], s->v[s->n - 1]);
    }
    printf("\n");
}

static void sleep_until(uint64_t t) {
    struct timespec ts;
    uint64_t now = now_ns();
    if (t <= now) return;
    ts.tv_sec = (time_t)((t - now) / 1000000000u);
    ts.tv_nsec = (long)((t - now) % 1000000000u);
    nanosleep(&ts, NULL);
}

/* ---- ss_probe wake ------------------------------------------------------------------------- */

typedef struct waker {
    int rd, wr, is_eventfd, n;
    volatile uint64_t sent;
    volatile int taken; /* wakes the waiter has read: the next is sent only after it (two would merge) */
    double *lat;
} waker;

static void *wake_waiter(void *arg) {
    waker *w = arg;
    for (int i = 0; i < w->n; i++) {
        struct pollfd p = {w->rd, POLLIN, 0};
        uint64_t buf[8];
        while (poll(&p, 1, -1) != 1) {}
        w->lat[i] = (double)(now_ns() - __atomic_load_n(&w->sent, __ATOMIC_ACQUIRE)) / 1e3;
        while (read(w->rd, buf, sizeof buf) > 0) {}
        __atomic_store_n(&w->taken, i + 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* `keep_running`: the waker spins for 200 us after each wake, as a render thread keeps its CPU */
static void wake_run(const char *name, int use_eventfd, int keep_running, int n, double idle_us) {
    waker w;
    pthread_t t;
    int fds[2];
    series s = {"WAKE", name, calloc((size_t)n, sizeof(double)), n};
    memset(&w, 0, sizeof w);
#ifdef __linux__
    if (use_eventfd) {
        fds[0] = fds[1] = eventfd(0, EFD_NONBLOCK);
    } else
#endif
    {
        if (pipe(fds) != 0) return;
        fcntl(fds[0], F_SETFL, O_NONBLOCK);
    }
    w.rd = fds[0];
    w.wr = fds[1];
    w.n = n;
    w.lat = s.v;
    pthread_create(&t, NULL, wake_waiter, &w);
    for (int i = 0; i < n; i++) {
        uint64_t one = 1;
        ssize_t k;
        while (__atomic_load_n(&w.taken, __ATOMIC_ACQUIRE) < i) sched_yield();
        sleep_until(now_ns() + (uint64_t)(idle_us * 1e3));
        __atomic_store_n(&w.sent, now_ns(), __ATOMIC_RELEASE);
        k = write(w.wr, &one, use_eventfd ? sizeof one : 1);
        (void)k;
        if (keep_running) {
            uint64_t until = now_ns() + 200000;
            while (now_ns() < until) {}
        }
    }
    pthread_join(t, NULL);
    report(&s);
    free(s.v);
    close(fds[0]);
    if (fds[1] != fds[0]) close(fds[1]);
}

static int wake_main(int n, double idle_us) {
    if (n <= 0 || idle_us < 0) {
        fprintf(stderr, "usage: ss_probe wake N IDLE_US\n");
        return 2;
    }
    wake_run("eventfd_waker_sleeps", 1, 0, n, idle_us);
    wake_run("eventfd_waker_runs", 1, 1, n, idle_us);
    wake_run("pipe_waker_sleeps", 0, 0, n, idle_us);
    wake_run("pipe_waker_runs", 0, 1, n, idle_us);
    printf("RESULT ok\n");
    return 0;
}

int main(int argc, char **argv) {
    static const struct { const char *name, *format, *encoding; uint32_t bytes, first; } spec[SS_REFERENCE_CHANNEL_COUNT] = SS_REFERENCE_CHANNELS;
    ss_channel ch[SS_REFERENCE_CHANNEL_COUNT];
    ss_client_config cc;
    ss_session_config cfg;
    ss_client *c = NULL;
    ss_session *s = NULL;
    uint64_t offset = 0, last = 0;
    unsigned char *frame;
    int w, h, frames, cuda, spin, failures = 0, done = 0;
    uint64_t run_start = 0;
    double interval_ms;
    int (*htod)(unsigned long long, const void *, size_t) = NULL;
    int (*dtod)(unsigned long long, unsigned long long, size_t) = NULL;
    int (*dalloc)(unsigned long long *, size_t) = NULL;
    unsigned long long dframe = 0; /* cuda-ipc: the frame on the device, copied into each slot as a render would */
    int host_upload = getenv("SS_PROBE_HOST_UPLOAD") != NULL;
    series all[8] = {{"TIMING", "acquire", 0, 0}, {"TIMING", "submit", 0, 0}, {"TIMING", "poll", 0, 0},
                     {"TIMING", "output", 0, 0}, {"SPLIT", "submit_to_sent", 0, 0},
                     {"SPLIT", "sent_to_received_beyond_total", 0, 0}, {"SPLIT", "received_to_seen", 0, 0},
                     {"OVERHEAD", NULL, 0, 0}};
    series *t_acq = &all[0], *t_sub = &all[1], *t_poll = &all[2], *t_out = &all[3], *p_send = &all[4],
           *p_wire = &all[5], *p_back = &all[6], *over = &all[7];
    if (argc == 4 && strcmp(argv[1], "wake") == 0) return wake_main(atoi(argv[2]), atof(argv[3]));
    if (argc < 6 || argc > 8 || (argc == 8 && strcmp(argv[7], "spin") && strcmp(argv[7], "yield"))) {
        fprintf(stderr, "usage: ss_probe ADDRESS shm|cuda-ipc WIDTH HEIGHT FRAMES [INTERVAL_MS [spin|yield]]\n");
        return 2;
    }
    cuda = strcmp(argv[2], SS_BACKEND_CUDA_IPC) == 0;
    w = atoi(argv[3]);
    h = atoi(argv[4]);
    frames = atoi(argv[5]);
    interval_ms = argc >= 7 ? atof(argv[6]) : 0.0;
    spin = argc == 8 && strcmp(argv[7], "spin") == 0;
    if (w <= 0 || h <= 0 || frames <= WARMUP || interval_ms < 0) {
        fprintf(stderr, "ss_probe: WIDTH and HEIGHT > 0, FRAMES > %d, INTERVAL_MS >= 0\n", WARMUP);
        return 2;
    }
    if (cuda) {
        void *lib = dlopen("libcuda.so.1", RTLD_NOW);
        int dev;
        void *ctx;
        if (!lib) {
            printf("SKIP no CUDA driver\n");
            return 3;
        }
        ((int (*)(unsigned))(uintptr_t)dlsym(lib, "cuInit"))(0);
        ((int (*)(int *, int))(uintptr_t)dlsym(lib, "cuDeviceGet"))(&dev, 0);
        ((int (*)(void **, int))(uintptr_t)dlsym(lib, "cuDevicePrimaryCtxRetain"))(&ctx, dev);
        ((int (*)(void *))(uintptr_t)dlsym(lib, "cuCtxSetCurrent"))(ctx); /* as the CUDA runtime would have */
        htod = (int (*)(unsigned long long, const void *, size_t))(uintptr_t)dlsym(lib, "cuMemcpyHtoD_v2");
        dtod = (int (*)(unsigned long long, unsigned long long, size_t))(uintptr_t)dlsym(lib, "cuMemcpyDtoD_v2");
        dalloc = (int (*)(unsigned long long *, size_t))(uintptr_t)dlsym(lib, "cuMemAlloc_v2");
    }
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
    frame = malloc(offset);
    {   /* plausible planes: depth positive, floats finite (half exponents kept below the top) */
        uint32_t r = 2463534242u;
        for (uint64_t i = 0; i < offset; i++) {
            r ^= r << 13; r ^= r >> 17; r ^= r << 5;
            frame[i] = (unsigned char)(r & 0x3F);
        }
        for (int px = 0; px < w * h; px++) {
            float d = 1.0f + (float)(px % 97) / 10.0f;
            memcpy(frame + ch[1].offset + 4 * (size_t)px, &d, 4);
        }
    }
    for (int i = 0; i < 8; i++) all[i].v = calloc((size_t)frames * 64 + 64, sizeof(double));
    if (cuda && !host_upload && (dalloc(&dframe, offset) != 0 || htod(dframe, frame, offset) != 0)) {
        printf("FAIL device frame\nRESULT failed\n");
        return 1;
    }

    memset(&cc, 0, sizeof cc);
    cc.size = sizeof cc;
    cc.address = argv[1];
    cc.name = "ss_probe";
    cc.timeout_ms = 120000; /* a GPU service captures the session's graph at open */
    if (getenv("SS_PROBE_NO_ANTICIPATION")) cc.flags |= SS_CLIENT_NO_ANTICIPATION;
    if (getenv("SS_PROBE_NO_DOORBELL")) cc.flags |= SS_CLIENT_NO_DOORBELL;
    if (ss_client_create(&cc, &c) != SS_OK) {
        printf("FAIL create: %s %s\nRESULT failed\n", ss_last_error_code(), ss_last_error_message());
        return 1;
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.size = sizeof cfg;
    cfg.width = (uint32_t)w;
    cfg.height = (uint32_t)h;
    cfg.channels = ch;
    cfg.channel_count = SS_REFERENCE_CHANNEL_COUNT;
    cfg.input_slot_bytes = offset;
    cfg.backend = cuda ? SS_BACKEND_CUDA_IPC : SS_BACKEND_SHM;
    cfg.slots = 3;
    ss_params_init(&cfg.params);
    cfg.params.deadline_ms = 10000; /* a loaded CPU is slow; the probe wants every frame done */
    if (ss_session_open(c, &cfg, &s) != SS_OK) {
        printf("FAIL open: %s %s\nRESULT failed\n", ss_last_error_code(), ss_last_error_message());
        ss_client_destroy(c);
        return 1;
    }
    run_start = now_ns();
    uint64_t wakes_before = 0;
    int woke = 0;
    for (int f = 0; f < frames; f++) {
        ss_slot slot;
        ss_event ev;
        uint64_t seq = 0, start = now_ns(), t0, t1, seen, end = start + 60000000000ull;
        ss_status st;
        int warm = f >= WARMUP;
        do {
            t0 = now_ns();
            st = ss_acquire(s, NULL, &slot);
            if (warm && t_acq->n < frames * 64) add(t_acq, (now_ns() - t0) / 1e3);
        } while (st == SS_BUSY && now_ns() < end);
        if (st != SS_OK) { printf("FAIL acquire %s\n", ss_status_name(st)); failures++; break; }
        if (cuda) {
            /* a device-to-device copy, ordered before the ready signal on the same (legacy) stream, as
             * an engine's render into the ring is; SS_PROBE_HOST_UPLOAD=1: a host upload instead
             * (pageable, ~7 ms at 1080p, and its jitter moves every submit) */
            int rc = host_upload ? htod((unsigned long long)(uintptr_t)slot.input, frame, offset)
                                 : dtod((unsigned long long)(uintptr_t)slot.input, dframe, offset);
            if (rc != 0) { printf("FAIL copy\n"); failures++; break; }
        } else {
            memcpy(slot.input, frame, offset);
        }
        t0 = now_ns();
        st = ss_submit(s, slot.index, NULL, NULL, &seq);
        t1 = now_ns();
        if (warm) add(t_sub, (t1 - t0) / 1e3);
        {   /* whether this submit had to wake the I/O thread (read after the timed call) */
            ss_client_info ci;
            memset(&ci, 0, sizeof ci);
            ci.size = sizeof ci;
            if (ss_client_get_info(c, &ci) == SS_OK) {
                woke = ci.wakes != wakes_before;
                wakes_before = ci.wakes;
            }
        }
        if (st != SS_OK) { printf("FAIL submit %s\n", ss_status_name(st)); failures++; break; }
        for (;;) {
            uint64_t p0 = now_ns();
            st = ss_poll(s, &ev);
            seen = now_ns();
            if (warm && t_poll->n < frames * 64) add(t_poll, (seen - p0) / 1e3);
            if (st == SS_OK && ev.seq == seq) break;
            if (seen > end) { printf("FAIL no answer to frame %llu\n", (unsigned long long)seq); failures++; goto out; }
            if (!spin) sched_yield();
        }
        if (ev.kind != SS_EVENT_DONE) {
            printf("NOTE frame %llu: kind %d %s %s\n", (unsigned long long)seq, ev.kind, ev.code, ev.message);
            continue;
        }
        {
            const void *p;
            uint64_t n;
            uint64_t o0 = now_ns();
            st = ss_output(s, (uint32_t)ev.slot, NULL, &p, &n);
            if (warm) add(t_out, (now_ns() - o0) / 1e3);
            if (st != SS_OK) { printf("FAIL output %s\n", ss_status_name(st)); failures++; break; }
        }
        done++;
        printf("FRAME seq=%llu submit0=%llu submit1=%llu sent=%llu received=%llu seen=%llu total_ms=%.6f model_ms=%.6f"
               " woke=%d\n", (unsigned long long)seq, (unsigned long long)t0, (unsigned long long)t1,
               (unsigned long long)ev.sent_ns, (unsigned long long)ev.received_ns, (unsigned long long)seen, ev.total_ms,
               ev.model_ms, woke);
        if (warm && ev.sent_ns && ev.received_ns) {
            add(p_send, ((double)ev.sent_ns - (double)t1) / 1e3);
            add(p_wire, ((double)ev.received_ns - (double)ev.sent_ns) / 1e3 - ev.total_ms * 1e3);
            add(p_back, ((double)seen - (double)ev.received_ns) / 1e3);
        }
        if (warm) add(over, (double)(seen - t1) / 1e3 - ev.total_ms * 1e3);
        sleep_until(start + (uint64_t)(interval_ms * 1e6));
    }
out:
    printf("%s %dx%d: %d of %d frames done, interval %.1f ms, poll %s\n", cuda ? "cuda-ipc" : "shm", w, h, done,
           frames, interval_ms, spin ? "spin" : "yield");
    for (int i = 0; i < 8; i++) {
        report(&all[i]);
        free(all[i].v);
    }
    {
        ss_client_info ci;
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        memset(&ci, 0, sizeof ci);
        ci.size = sizeof ci;
        ss_client_get_info(c, &ci);
        printf("CLIENT spun_us=%llu period_ms=%.3f submits=%llu wakes=%llu unwoken=%llu cpu_ms=%.1f wall_ms=%.1f anticipation=%d\n",
               (unsigned long long)ci.spun_us, ci.period_ms, (unsigned long long)ci.submits, (unsigned long long)ci.wakes,
               (unsigned long long)ci.unwoken,
               (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3,
               (now_ns() - run_start) / 1e6, getenv("SS_PROBE_NO_ANTICIPATION") == NULL);
    }
    ss_session_close(s);
    ss_client_destroy(c);
    free(frame);
    if (done != frames) failures++;
    printf(failures ? "RESULT failed %d\n" : "RESULT ok\n", failures);
    return failures ? 1 : 0;
}
