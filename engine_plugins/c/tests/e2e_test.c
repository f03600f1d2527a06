/* e2e_test: libstreamstyle against the real service (CPU, shm), driven by tests/test_c_client.py.
 *   ss_e2e_test full ADDR      bad arguments, open, frames, prompt switch and blend, params, late
 *                              frames, stats, close (the service has its prompt encoder)
 *   ss_e2e_test dump ADDR DIR N  N frames' inputs and outputs written to DIR (compared with the
 *                              Python client's outputs for the same inputs and seed)
 *   ss_e2e_test gone ADDR      the service killed for good: reported as an event, every call answers at
 *                              once (busy, unavailable), close and destroy need no service
 *   ss_e2e_test rhythm ADDR MS [off] [nobell]  a render loop submitting every MS milliseconds on a
 *                              fixed beat (a frame skipped when no slot is free) with one 300 ms
 *                              hitch halfway, "HITCH period_ms=" printed three frames after it; "RHYTHM
 *                              period_ms= submits= wakes= spun_us=" (the I/O thread's anticipation,
 *                              or with "off" none: SS_CLIENT_NO_ANTICIPATION), "DOORBELL on= answers="
 *                              (the session's doorbell; "nobell": SS_CLIENT_NO_DOORBELL) and the
 *                              frame-path timings
 *   ss_e2e_test polled ADDR N  N frames, the render thread spinning on ss_poll and the I/O thread
 *                              asleep: ss_poll takes the answers from the doorbell itself; prints
 *                              "POLLED done= answers= polled="
 *   ss_e2e_test restart ADDR   a level load longer than the reap time, then the service killed and
 *                              restarted mid-stream by the driver: prints "PHASE running", expects the
 *                              kill, prints "EVENT lost", expects a new service, prints "EVENT reopened"
 * Every frame-path call is timed and its thread's context switches counted (getrusage): "TIMING
 * <call> n= p50_us= p99_us= max_us= waits= preempted=" lines are printed for the driver to judge.
 * waits counts voluntary switches inside the calls (the thread blocked: a lock held elsewhere, a
 * full pipe, a sleep), which must be 0 whatever the machine's load; preempted counts involuntary
 * ones (the scheduler took the core), which say nothing about the library and are what makes a
 * microsecond figure on a busy 2-core machine noise. Under valgrind (one thread at a time) neither
 * means anything. The last line is "RESULT ok" or "RESULT failed N". */
#define _GNU_SOURCE /* getrusage(RUSAGE_THREAD) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "streamstyle.h"
#include "timing.h"

#define W 64
#define H 48

static int failures;
#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            printf("FAIL %s:%d: %s (last error %s: %s)\n", __FILE__, __LINE__, #cond,        \
                   ss_last_error_code(), ss_last_error_message());                           \
            fflush(stdout);                                                                  \
            failures++;                                                                      \
        }                                                                                    \
    } while (0)

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000.0) * 1e6)};
    nanosleep(&ts, NULL);
}

/* ---- the reference engine's layout and some plausible G-buffers ------------------------------ */

static ss_channel CHANNELS[SS_REFERENCE_CHANNEL_COUNT];
static uint64_t SLOT_BYTES;
static struct { const char *name, *format, *encoding; uint32_t bytes, first; } SPEC[SS_REFERENCE_CHANNEL_COUNT] = SS_REFERENCE_CHANNELS;

static void reference_layout(void) {
    uint64_t offset = 0, last = 0;
    for (int i = 0; i < SS_REFERENCE_CHANNEL_COUNT; i++) {
        ss_channel *c = &CHANNELS[i];
        memset(c, 0, sizeof *c);
        c->name = SPEC[i].name;
        c->format = SPEC[i].format;
        c->encoding = SPEC[i].encoding;
        c->first = SPEC[i].first;
        if (SPEC[i].first) {
            c->offset = last;
            continue;
        }
        c->offset = last = offset;
        offset = (offset + (uint64_t)W * H * SPEC[i].bytes + SS_REFERENCE_PLANE_ALIGN - 1) / SS_REFERENCE_PLANE_ALIGN * SS_REFERENCE_PLANE_ALIGN;
        SLOT_BYTES = offset;
    }
}

static uint32_t rng = 12345;
static uint32_t next_rand(void) {
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}
static float unit(void) { return (float)(next_rand() & 0xffff) / 65535.0f; }

static uint16_t half(float f) { /* round toward zero is plenty for test data in [-1, 10] */
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, mant = x & 0x7fffff;
    if (exp < 113) return (uint16_t)sign;
    return (uint16_t)(sign | ((exp - 112) << 10) | (mant >> 13));
}

static void fill(void *slot) {
    unsigned char *base = slot;
    for (int i = 0; i < SS_REFERENCE_CHANNEL_COUNT; i++) {
        unsigned char *p = base + CHANNELS[i].offset;
        if (SPEC[i].first) continue;
        for (int px = 0; px < W * H; px++) {
            if (!strcmp(SPEC[i].format, "rgba16f")) {
                uint16_t *h = (uint16_t *)(void *)(p + 8 * px);
                for (int k = 0; k < 4; k++) h[k] = half(i == 2 ? unit() * 2 - 1 : unit());
            } else if (!strcmp(SPEC[i].format, "r32f")) {
                float d = 1.0f + 9.0f * unit();
                memcpy(p + 4 * px, &d, 4);
            } else if (!strcmp(SPEC[i].format, "rg16f")) {
                uint16_t *h = (uint16_t *)(void *)(p + 4 * px);
                h[0] = half(unit() - 0.5f);
                h[1] = half(unit() - 0.5f);
            } else if (!strcmp(SPEC[i].format, "r32_uint")) {
                uint32_t id = next_rand() % 10;
                memcpy(p + 4 * px, &id, 4);
            } else {
                for (uint32_t k = 0; k < SPEC[i].bytes; k++) p[SPEC[i].bytes * px + k] = (unsigned char)next_rand();
            }
        }
    }
}

static ss_session_config session_config(void) {
    ss_session_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = sizeof cfg;
    cfg.width = W;
    cfg.height = H;
    cfg.channels = CHANNELS;
    cfg.channel_count = SS_REFERENCE_CHANNEL_COUNT;
    cfg.input_slot_bytes = SLOT_BYTES;
    cfg.backend = SS_BACKEND_SHM;
    cfg.slots = 3;
    ss_params_init(&cfg.params);
    return cfg;
}

/* ---- frames ---------------------------------------------------------------------------------- */

static int is_late_reason(const char *code) {
    static const char *const reasons[] = {SS_LATE_REASONS_LIST};
    for (int i = 0; i < SS_LATE_REASONS_COUNT; i++)
        if (!strcmp(code, reasons[i])) return 1;
    return 0;
}

/* Acquire, fill, submit, and poll until this frame's answer; checks the output of a done frame. */
static ss_event run_frame(ss_session *s, const ss_frame_info *info, double timeout_ms) {
    ss_slot slot;
    ss_event ev;
    uint64_t seq = 0;
    double end = now_us() + timeout_ms * 1000;
    memset(&ev, 0, sizeof ev);
    while (timed_acquire(s, &slot) == SS_BUSY) {
        if (now_us() > end) { CHECK(!"a slot within the timeout"); return ev; }
        while (timed_poll(s, &ev) == SS_OK) {}
        sleep_ms(1);
    }
    fill(slot.input);
    CHECK(timed_submit(s, slot.index, info, &seq) == SS_OK);
    for (;;) {
        ss_status st = timed_poll(s, &ev);
        if (st == SS_OK && ev.seq == seq && (ev.kind == SS_EVENT_DONE || ev.kind == SS_EVENT_LATE ||
                                             ev.kind == SS_EVENT_ERROR))
            break;
        if (now_us() > end) { CHECK(!"an answer within the timeout"); ev.kind = 0; return ev; }
        if (st == SS_NO_EVENT) sleep_ms(0.5);
    }
    if (ev.kind == SS_EVENT_DONE) {
        const unsigned char *px;
        const void *p;
        uint64_t n = 0;
        int varied = 0, opaque = 1;
        CHECK(timed_output(s, (uint32_t)ev.slot, &p, &n) == SS_OK);
        CHECK(n == (uint64_t)W * H * SS_OUTPUT_BYTES_PER_PIXEL_RGBA8);
        px = p;
        for (uint64_t i = 0; i < (uint64_t)W * H; i++) {
            opaque &= px[4 * i + 3] == 255;
            varied |= px[4 * i] != px[0] || px[4 * i + 1] != px[1];
        }
        CHECK(opaque && varied);
        CHECK(ev.total_ms > 0 && ev.model_ms > 0 && ev.total_ms >= ev.model_ms);
    }
    return ev;
}

static int run_done(ss_session *s, int n, const ss_frame_info *info) {
    int done = 0;
    for (int i = 0; i < n; i++) {
        ss_event ev = run_frame(s, info, 30000);
        if (ev.kind != SS_EVENT_DONE) printf("frame answered kind=%d code=%s %s\n", ev.kind, ev.code, ev.message);
        done += ev.kind == SS_EVENT_DONE;
    }
    CHECK(done == n);
    return done;
}

/* ---- scenarios ------------------------------------------------------------------------------- */

static ss_client *connect_with(const char *addr, uint32_t timeout_ms, uint32_t flags) {
    ss_client_config cc;
    ss_client *c = NULL;
    memset(&cc, 0, sizeof cc);
    cc.size = sizeof cc;
    cc.address = addr;
    cc.name = "c-e2e-test";
    cc.timeout_ms = timeout_ms;
    cc.flags = flags;
    CHECK(ss_client_create(&cc, &c) == SS_OK);
    return c;
}

static ss_client *connect_to(const char *addr, uint32_t timeout_ms) { return connect_with(addr, timeout_ms, 0); }

/* a scenario's end: the frame-path timings, then the session closed and the client destroyed */
static int finish(ss_client *c, ss_session *s) {
    report_calls();
    CHECK(ss_session_close(s) == SS_OK);
    CHECK(ss_client_destroy(c) == SS_OK);
    return 0;
}

static void bad_arguments(ss_client *c) {
    ss_client_config cc;
    ss_client *none = (ss_client *)1;
    ss_session_config cfg = session_config();
    ss_session *s = (ss_session *)1;
    ss_channel only_color = CHANNELS[0];

    CHECK(ss_client_create(NULL, &none) == SS_INVALID_ARGUMENT && none == NULL);
    memset(&cc, 0, sizeof cc);
    cc.size = sizeof cc;
    cc.address = "";
    CHECK(ss_client_create(&cc, &none) == SS_INVALID_ARGUMENT && none == NULL);
    cc.address = "ipc:///nonexistent-dir/streamstyle.sock";
    cc.timeout_ms = 300;
    CHECK(ss_client_create(&cc, &none) == SS_UNAVAILABLE && none == NULL);
    CHECK(!strcmp(ss_last_error_code(), "unavailable"));
    cc.size = 4;
    CHECK(ss_client_create(&cc, &none) == SS_INVALID_ARGUMENT);

    CHECK(ss_session_open(c, NULL, &s) == SS_INVALID_ARGUMENT && s == NULL);
    cfg.slots = SS_MIN_SLOTS - 1;
    CHECK(ss_session_open(c, &cfg, &s) == SS_INVALID_ARGUMENT);
    cfg = session_config();
    cfg.slots = SS_MAX_SLOTS + 1;
    CHECK(ss_session_open(c, &cfg, &s) == SS_INVALID_ARGUMENT);
    cfg = session_config();
    cfg.backend = "vulkan";
    CHECK(ss_session_open(c, &cfg, &s) == SS_INVALID_ARGUMENT);
    cfg = session_config();
    cfg.output_format = "rgb8";
    CHECK(ss_session_open(c, &cfg, &s) == SS_INVALID_ARGUMENT);
    cfg = session_config();
    cfg.width = 0;
    CHECK(ss_session_open(c, &cfg, &s) == SS_INVALID_ARGUMENT);
    cfg = session_config();
    cfg.channels = NULL;
    CHECK(ss_session_open(c, &cfg, &s) == SS_INVALID_ARGUMENT);
    cfg = session_config();
    cfg.params.steps = 7;
    CHECK(ss_session_open(c, &cfg, &s) == SS_INVALID_ARGUMENT);
    cfg = session_config();
    cfg.input_slot_bytes = 0;
    CHECK(ss_session_open(c, &cfg, &s) == SS_INVALID_ARGUMENT);
    /* the service's refusals come back with the protocol's code, and nothing is left open */
    cfg = session_config();
    cfg.channels = &only_color;
    cfg.channel_count = 1;
    CHECK(ss_session_open(c, &cfg, &s) == SS_REFUSED && s == NULL);
    CHECK(!strcmp(ss_last_error_code(), SS_ERR_BAD_LAYOUT));
    cfg = session_config();
    cfg.width = cfg.height = 3;
    CHECK(ss_session_open(c, &cfg, &s) == SS_REFUSED);
    CHECK(!strcmp(ss_last_error_code(), SS_ERR_BAD_RESOLUTION));
    cfg = session_config();
    cfg.input_slot_bytes = 1000; /* smaller than the layout */
    CHECK(ss_session_open(c, &cfg, &s) == SS_REFUSED);
    CHECK(!strcmp(ss_last_error_code(), SS_ERR_BAD_RING) || !strcmp(ss_last_error_code(), SS_ERR_BAD_LAYOUT));
    /* no CUDA driver here: the library still loads, and says so */
    cfg = session_config();
    cfg.backend = SS_BACKEND_CUDA_IPC;
    {
        ss_status st = ss_session_open(c, &cfg, &s);
        printf("cuda-ipc open: %s (%s: %s)\n", ss_status_name(st), ss_last_error_code(), ss_last_error_message());
        CHECK(st == SS_NO_CUDA || st == SS_OK || st == SS_CUDA_FAILED || st == SS_REFUSED);
        if (st == SS_OK) ss_session_close(s);
    }
    CHECK(ss_acquire(NULL, NULL, NULL) == SS_INVALID_ARGUMENT);
    CHECK(ss_submit(NULL, 0, NULL, NULL, NULL) == SS_INVALID_ARGUMENT);
    CHECK(ss_poll(NULL, NULL) == SS_INVALID_ARGUMENT);
    CHECK(ss_output(NULL, 0, NULL, NULL, NULL) == SS_INVALID_ARGUMENT);
    CHECK(ss_session_close(NULL) == SS_INVALID_ARGUMENT);
    CHECK(ss_client_destroy(NULL) == SS_INVALID_ARGUMENT);
}

static int scenario_full(const char *addr) {
    ss_client *c = connect_to(addr, 20000);
    ss_client_info ci;
    ss_session_config cfg;
    ss_session *s = NULL, *left_open = NULL;
    ss_session_stats st;
    ss_params params;
    ss_frame_info info;
    ss_event ev;
    const void *p;
    int done = 0, late = 0, answered = 0, submitted = 0;
    if (!c) return 1;
    memset(&ci, 0, sizeof ci);
    ci.size = sizeof ci;
    CHECK(ss_client_get_info(c, &ci) == SS_OK && ci.connected == 1 && ci.heartbeat_ms > 0);
    printf("connected to %s (heartbeat %u ms, reap after %u ms)\n", ci.service, ci.heartbeat_ms, ci.reap_after_ms);
    bad_arguments(c);

    cfg = session_config();
    cfg.prompt = "pencil hatching";
    cfg.params.steps = 2;
    cfg.seed = 4;
    CHECK(ss_session_open(c, &cfg, &s) == SS_OK && s != NULL);
    if (!s) return 1;
    CHECK(ss_submit(s, 0, NULL, NULL, NULL) == SS_WRONG_STATE); /* not acquired */
    CHECK(ss_submit(s, 99, NULL, NULL, NULL) == SS_INVALID_ARGUMENT);
    CHECK(ss_output(s, 99, NULL, &p, NULL) == SS_INVALID_ARGUMENT);
    CHECK(ss_poll(s, &ev) == SS_NO_EVENT);

    done += run_done(s, 8, NULL);
    CHECK(ss_set_prompt(s, "neon glow", 0) == SS_OK);
    done += run_done(s, 3, NULL);
    {
        const char *texts[] = {"watercolor", "noir"};
        const float weights[] = {0.7f, 0.3f}, zero[] = {0.7f, 0.0f};
        const char *five[] = {"a", "b", "c", "d", "e"};
        const float ones[] = {1, 1, 1, 1, 1};
        CHECK(ss_set_prompt_blend(s, texts, weights, 2, 3) == SS_OK);
        CHECK(ss_set_prompt_blend(s, texts, zero, 2, 3) == SS_INVALID_ARGUMENT);
        CHECK(ss_set_prompt_blend(s, five, ones, 5, 0) == SS_INVALID_ARGUMENT);
        CHECK(ss_set_prompt(s, "x", 601) == SS_INVALID_ARGUMENT);
    }
    {   /* refused by the service: the blend's two sides would hold 2 + 3 parts, more than 4 */
        const char *three[] = {"ink", "chalk", "oil"};
        const float w3[] = {1, 1, 1};
        CHECK(ss_set_prompt_blend(s, three, w3, 3, 10) == SS_REFUSED);
        CHECK(!strcmp(ss_last_error_code(), SS_ERR_BAD_PROMPT));
    }
    done += run_done(s, 4, NULL); /* the blend runs over these */

    ss_params_init(&params);
    params.steps = 1;
    CHECK(ss_set_params(s, &params) == SS_OK);
    params.steps = 9;
    CHECK(ss_set_params(s, &params) == SS_INVALID_ARGUMENT);
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    info.fields = SS_FRAME_VIEW | SS_FRAME_PROJ | SS_FRAME_JITTER | SS_FRAME_DT | SS_FRAME_PARAMS;
    for (int i = 0; i < 16; i++) info.view[i] = info.proj[i] = (i % 5 == 0) ? 1.0f : 0.0f;
    info.dt = 1.0f / 60;
    ss_params_init(&info.params);
    info.params.strength = 0.6f;
    done += run_done(s, 2, &info);

    /* frames faster than the service, with a deadline it cannot meet: answered late, never lost */
    info.fields = SS_FRAME_PARAMS;
    info.params.deadline_ms = 0.1;
    for (double end = now_us() + 3e6; now_us() < end || answered < submitted;) {
        ss_slot slot;
        if (now_us() < end && timed_acquire(s, &slot) == SS_OK) {
            fill(slot.input);
            if (timed_submit(s, slot.index, &info, NULL) == SS_OK) submitted++;
        }
        while (timed_poll(s, &ev) == SS_OK) {
            answered++;
            if (ev.kind == SS_EVENT_LATE) {
                late++;
                CHECK(is_late_reason(ev.code));
            } else if (ev.kind == SS_EVENT_DONE) {
                done++;
                CHECK(timed_output(s, (uint32_t)ev.slot, &p, NULL) == SS_OK);
            } else {
                CHECK(!"only done or late");
            }
        }
        if (now_us() > end + 30e6) break;
        sleep_ms(0.2);
    }
    printf("late phase: %d submitted, %d answered, %d late\n", submitted, answered, late);
    CHECK(answered == submitted && late > 0);

    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK(ss_stats(s, &st) == SS_OK);
    printf("stats: frames_in=%llu done=%llu late=%llu dropped=%llu p50=%.2f ms p99=%.2f ms model p50=%.2f ms\n",
           (unsigned long long)st.frames_in, (unsigned long long)st.done, (unsigned long long)st.late,
           (unsigned long long)st.dropped, st.latency_p50_ms, st.latency_p99_ms, st.model_p50_ms);
    CHECK(st.done == (uint64_t)done && st.frames_in == (uint64_t)(done + late) && st.latency_p50_ms > 0);
    CHECK(ss_session_close(s) == SS_OK);

    cfg = session_config();
    CHECK(ss_session_open(c, &cfg, &left_open) == SS_OK); /* ss_client_destroy closes it */
    if (left_open) run_done(left_open, 1, NULL);
    report_calls();
    CHECK(ss_client_destroy(c) == SS_OK);
    return 0;
}

static void expect_line(const char *want) {
    char line[128];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, want, strlen(want)) != 0) {
        printf("FAIL expected '%s' on stdin\n", want);
        failures++;
    }
}

static int scenario_restart(const char *addr) {
    ss_client *c = connect_to(addr, 10000);
    ss_client_info ci;
    ss_session_info si;
    ss_session_config cfg = session_config();
    ss_session *s = NULL;
    ss_session_stats st;
    ss_event ev;
    uint64_t first_id;
    int lost = 0, reopened = 0, restarted_late = 0, busy = 0, calls = 0;
    if (!c) return 1;
    memset(&ci, 0, sizeof ci);
    ci.size = sizeof ci;
    memset(&si, 0, sizeof si);
    si.size = sizeof si;
    CHECK(ss_session_open(c, &cfg, &s) == SS_OK);
    if (!s) return 1;
    run_done(s, 3, NULL);
    CHECK(ss_session_get_info(s, &si) == SS_OK && si.live == 1);
    first_id = si.session_id;

    /* a level load: the render thread makes no call for longer than the reap time */
    CHECK(ss_client_get_info(c, &ci) == SS_OK);
    sleep_ms(1.6 * ci.reap_after_ms);
    run_done(s, 2, NULL);
    CHECK(ss_session_get_info(s, &si) == SS_OK && si.session_id == first_id && si.live == 1);

    printf("PHASE running\n");
    fflush(stdout);
    /* the render loop goes on while the driver kills the service and starts another */
    for (double end = now_us() + 180e6; now_us() < end && !reopened;) {
        ss_slot slot;
        calls++;
        if (timed_acquire(s, &slot) == SS_OK) {
            fill(slot.input);
            if (timed_submit(s, slot.index, NULL, NULL) != SS_OK) busy++;
        } else {
            busy++;
        }
        while (timed_poll(s, &ev) == SS_OK) {
            if (ev.kind == SS_EVENT_SERVICE_LOST && !lost) {
                lost = 1;
                printf("EVENT lost (%s)\n", ev.message);
                fflush(stdout);
            } else if (ev.kind == SS_EVENT_LATE && !strcmp(ev.code, SS_LATE_SERVICE_RESTARTED)) {
                restarted_late++;
            } else if (ev.kind == SS_EVENT_REOPENED) {
                reopened = 1;
                printf("EVENT reopened\n");
                fflush(stdout);
            } else if (ev.kind == SS_EVENT_DONE) {
                const void *p;
                CHECK(timed_output(s, (uint32_t)ev.slot, &p, NULL) == SS_OK);
            }
        }
        if (lost == 1) {
            lost = 2;
            expect_line("started");
        }
        sleep_ms(2);
    }
    printf("restart: %d frame-path iterations, %d busy, %d frames late (service_restarted)\n", calls, busy,
           restarted_late);
    CHECK(lost && reopened && restarted_late >= 0);
    CHECK(ss_session_get_info(s, &si) == SS_OK && si.live == 1 && si.session_id != 0);
    CHECK(ss_client_get_info(c, &ci) == SS_OK && ci.reconnects == 1 && ci.connected);
    run_done(s, 5, NULL);
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK(ss_stats(s, &st) == SS_OK);
    printf("after the restart: frames_in=%llu done=%llu\n", (unsigned long long)st.frames_in,
           (unsigned long long)st.done);
    /* a fresh service-side session: only frames since the reopen (a few may have gone out between the
     * reopen and this loop seeing its event) */
    CHECK(st.done >= 5 && st.done <= 5 + 3 && st.frames_in < 20);
    return finish(c, s);
}

static int scenario_gone(const char *addr) {
    ss_client *c = connect_to(addr, 10000);
    ss_client_info ci;
    ss_session_info si;
    ss_session_config cfg = session_config();
    ss_session *s = NULL;
    ss_session_stats st;
    ss_event ev;
    int lost = 0, busy = 0, late = 0, iterations = 0;
    double t0;
    if (!c) return 1;
    memset(&ci, 0, sizeof ci);
    ci.size = sizeof ci;
    memset(&si, 0, sizeof si);
    si.size = sizeof si;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK(ss_session_open(c, &cfg, &s) == SS_OK);
    if (!s) return 1;
    run_done(s, 2, NULL);
    printf("PHASE running\n");
    fflush(stdout);
    /* the render loop runs on while the driver kills the service for good */
    for (double end = now_us() + 60e6; now_us() < end && !lost;) {
        ss_slot slot;
        if (timed_acquire(s, &slot) == SS_OK) {
            fill(slot.input);
            timed_submit(s, slot.index, NULL, NULL);
        }
        while (timed_poll(s, &ev) == SS_OK) {
            if (ev.kind == SS_EVENT_SERVICE_LOST) lost = 1;
            if (ev.kind == SS_EVENT_LATE) late++;
        }
        sleep_ms(1);
    }
    CHECK(lost);
    printf("EVENT lost (%d frames answered late before)\n", late);
    fflush(stdout);
    for (double end = now_us() + 1.5e6; now_us() < end; iterations++) { /* nothing may wait or succeed */
        ss_slot slot;
        ss_status a = timed_acquire(s, &slot);
        busy += a == SS_BUSY;
        CHECK(a == SS_BUSY);
        while (timed_poll(s, &ev) == SS_OK) CHECK(ev.kind != SS_EVENT_DONE && ev.kind != SS_EVENT_REOPENED);
        sleep_ms(1);
    }
    t0 = now_us();
    CHECK(ss_set_prompt(s, "noir", 0) == SS_UNAVAILABLE && !strcmp(ss_last_error_code(), "unavailable"));
    CHECK(ss_stats(s, &st) == SS_UNAVAILABLE);
    CHECK(now_us() - t0 < 100e3); /* refused at once, not after the timeout */
    CHECK(ss_session_get_info(s, &si) == SS_OK && si.live == 0);
    CHECK(ss_client_get_info(c, &ci) == SS_OK && ci.connected == 0);
    printf("gone: %d iterations, %d busy\n", iterations, busy);
    report_calls();
    t0 = now_us();
    CHECK(ss_session_close(s) == SS_OK);
    CHECK(ss_client_destroy(c) == SS_OK);
    printf("close and destroy without a service: %.1f ms\n", (now_us() - t0) / 1e3);
    CHECK(now_us() - t0 < 2e6);
    return 0;
}

/* A game's render loop: a frame every `ms` on a fixed beat (deadlines, not sleeps after the work),
 * skipped when no slot is free; events taken between beats. */
static int scenario_rhythm(const char *addr, double ms, uint32_t flags) {
    int anticipation = !(flags & SS_CLIENT_NO_ANTICIPATION);
    ss_client *c = connect_with(addr, 20000, flags);
    ss_session_config cfg = session_config();
    ss_session *s = NULL;
    ss_client_info ci;
    int frames = (int)(6000.0 / ms), sent = 0, skipped = 0, done = 0;
    double beat;
    if (!c) return 1;
    cfg.params.deadline_ms = 30000;
    CHECK(ss_session_open(c, &cfg, &s) == SS_OK);
    if (!s) return 1;
    beat = now_us();
    for (int f = 0; f < frames; f++) {
        ss_slot slot;
        ss_event ev;
        beat += ms * 1000;
        if (f == frames / 2) beat += 300000; /* a hitch (a level load's 300 ms frame) mid-run */
        if (f == frames / 2 + 3) { /* three frames after it: the beat learned before it still holds */
            memset(&ci, 0, sizeof ci);
            ci.size = sizeof ci;
            CHECK(ss_client_get_info(c, &ci) == SS_OK);
            printf("HITCH period_ms=%.3f\n", ci.period_ms);
        }
        while (now_us() < beat) { /* the rest of the frame: its events, then idle */
            while (timed_poll(s, &ev) == SS_OK) done += ev.kind == SS_EVENT_DONE;
            sleep_ms(0.25);
        }
        if (timed_acquire(s, &slot) != SS_OK) {
            skipped++;
            continue;
        }
        fill(slot.input);
        if (timed_submit(s, slot.index, NULL, NULL) == SS_OK) sent++;
    }
    memset(&ci, 0, sizeof ci);
    ci.size = sizeof ci;
    CHECK(ss_client_get_info(c, &ci) == SS_OK);
    printf("RHYTHM period_ms=%.3f submits=%llu wakes=%llu spun_us=%llu sent=%d skipped=%d done=%d interval_ms=%.1f "
           "anticipation=%d unwoken=%llu\n", ci.period_ms, (unsigned long long)ci.submits, (unsigned long long)ci.wakes,
           (unsigned long long)ci.spun_us, sent, skipped, done, ms, anticipation, (unsigned long long)ci.unwoken);
    CHECK(sent > frames / 2 && ci.submits == (uint64_t)sent && ci.wakes + ci.unwoken <= ci.submits);
    CHECK(anticipation || ci.spun_us == 0);
    {
        ss_session_info si;
        memset(&si, 0, sizeof si);
        si.size = sizeof si;
        CHECK(ss_session_get_info(s, &si) == SS_OK);
        printf("DOORBELL on=%d answers=%llu done=%d polled=%llu\n", si.doorbell, (unsigned long long)si.doorbell_answers,
               done, (unsigned long long)si.doorbell_polled);
    }
    return finish(c, s);
}

/* N frames one at a time, the render thread spinning on ss_poll after each submit and the I/O thread
 * not anticipating (asleep until the answer's ZeroMQ copy wakes it): ss_poll takes the answers from
 * the doorbell itself. Every frame is answered exactly once (a second copy would be an event for a
 * frame already done). Each frame is rung in the doorbell by ss_submit itself: its sent_ns is no later
 * than ss_submit's return (`rung`; the I/O thread, asleep, sends the ZeroMQ copy later). Prints
 * "POLLED done= answers= polled= doorbell= rung=" and the frame-path timings. */
static int scenario_polled(const char *addr, int n) {
    ss_client *c = connect_with(addr, 20000, SS_CLIENT_NO_ANTICIPATION);
    ss_session_config cfg = session_config();
    ss_session *s = NULL;
    ss_session_info si;
    int done = 0, rung = 0;
    if (!c) return 1;
    cfg.params.deadline_ms = 30000;
    CHECK(ss_session_open(c, &cfg, &s) == SS_OK);
    if (!s) return 1;
    for (int f = 0; f < n; f++) {
        ss_slot slot;
        ss_event ev;
        uint64_t seq = 0;
        double end = now_us() + 30e6;
        ss_status st;
        while ((st = timed_acquire(s, &slot)) == SS_BUSY && now_us() < end) {}
        CHECK(st == SS_OK);
        if (st != SS_OK) break;
        fill(slot.input);
        CHECK(timed_submit(s, slot.index, NULL, &seq) == SS_OK);
        uint64_t returned_ns;
        {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            returned_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        }
        for (;;) {
            st = timed_poll(s, &ev);
            if (st == SS_OK) {
                CHECK(ev.seq == seq && ev.kind == SS_EVENT_DONE); /* no second copy of an earlier answer */
                if (ev.seq == seq) break;
            }
            if (now_us() > end) {
                CHECK(!"an answer within 30 s");
                break;
            }
        }
        done += st == SS_OK && ev.kind == SS_EVENT_DONE;
        rung += st == SS_OK && ev.sent_ns && ev.sent_ns <= returned_ns;
    }
    sleep_ms(200); /* the last answers' ZeroMQ copies arrive: they must not become events */
    {
        ss_event ev;
        CHECK(ss_poll(s, &ev) == SS_NO_EVENT);
    }
    memset(&si, 0, sizeof si);
    si.size = sizeof si;
    CHECK(ss_session_get_info(s, &si) == SS_OK);
    printf("POLLED done=%d answers=%llu polled=%llu doorbell=%d rung=%d\n", done, (unsigned long long)si.doorbell_answers,
           (unsigned long long)si.doorbell_polled, si.doorbell, rung);
    CHECK(done == n && si.doorbell_polled <= si.doorbell_answers && si.doorbell_answers <= (uint64_t)n);
    return finish(c, s);
}

static void write_file(const char *dir, const char *kind, int i, const void *data, size_t n) {
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s%d.bin", dir, kind, i);
    f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, n, f) == n);
    if (f) fclose(f);
}

/* N frames with seed 11; each frame's input slot and output written to DIR for the driver to replay
 * through the Python client and compare byte for byte. */
static int scenario_dump(const char *addr, const char *dir, int n) {
    ss_client *c = connect_to(addr, 20000);
    ss_session_config cfg = session_config();
    ss_session *s = NULL;
    if (!c) return 1;
    cfg.seed = 11;
    CHECK(ss_session_open(c, &cfg, &s) == SS_OK);
    if (!s) return 1;
    for (int i = 0; i < n; i++) {
        ss_slot slot;
        ss_event ev;
        uint64_t seq = 0;
        const void *p;
        uint64_t bytes;
        double end = now_us() + 30e6;
        while (ss_acquire(s, NULL, &slot) == SS_BUSY && now_us() < end) sleep_ms(1);
        fill(slot.input);
        write_file(dir, "in", i, slot.input, SLOT_BYTES);
        CHECK(ss_submit(s, slot.index, NULL, NULL, &seq) == SS_OK);
        for (;;) {
            if (ss_poll(s, &ev) == SS_OK && ev.seq == seq) break;
            if (now_us() > end) { CHECK(!"an answer"); return 1; }
            sleep_ms(0.5);
        }
        CHECK(ev.kind == SS_EVENT_DONE);
        CHECK(ss_output(s, (uint32_t)ev.slot, NULL, &p, &bytes) == SS_OK);
        write_file(dir, "out", i, p, (size_t)bytes);
    }
    CHECK(ss_session_close(s) == SS_OK);
    CHECK(ss_client_destroy(c) == SS_OK);
    return 0;
}

/* The wait counter itself: a call that sleeps must count as a wait, or "waits=0" would prove
 * nothing (a kernel without per-thread rusage would report zeros). */
static int the_wait_counter_sees_a_sleep(void) {
    timing probe = {"probe", 0, 0, 0, 0, 0, 0, 0};
    mark m = begin();
    sleep_ms(2);
    record(&probe, &m);
    free(probe.us);
    free(probe.kept);
    if (probe.waits < 1) printf("FAIL a 2 ms sleep counted %ld voluntary context switches\n", probe.waits);
    return probe.waits >= 1;
}

int main(int argc, char **argv) {
    int rc = 2;
    setvbuf(stdout, NULL, _IOLBF, 0);
    reference_layout();
    if (!the_wait_counter_sees_a_sleep()) {
        printf("RESULT failed 1\n");
        return 1;
    }
    if (argc == 3 && !strcmp(argv[1], "full")) rc = scenario_full(argv[2]);
    else if (argc == 3 && !strcmp(argv[1], "restart")) rc = scenario_restart(argv[2]);
    else if (argc == 3 && !strcmp(argv[1], "gone")) rc = scenario_gone(argv[2]);
    else if (argc == 5 && !strcmp(argv[1], "dump")) rc = scenario_dump(argv[2], argv[3], atoi(argv[4]));
    else if (argc == 4 && !strcmp(argv[1], "polled") && atoi(argv[3]) > 0) rc = scenario_polled(argv[2], atoi(argv[3]));
    else if (argc >= 4 && argc <= 6 && !strcmp(argv[1], "rhythm") && atof(argv[3]) > 0) {
        uint32_t flags = 0;
        for (int i = 4; i < argc; i++) flags |= !strcmp(argv[i], "off") ? SS_CLIENT_NO_ANTICIPATION
                                               : !strcmp(argv[i], "nobell") ? SS_CLIENT_NO_DOORBELL : 0x80000000u;
        if (flags & 0x80000000u) fprintf(stderr, "rhythm takes the words off and nobell\n");
        else rc = scenario_rhythm(argv[2], atof(argv[3]), flags);
    }
    else fprintf(stderr, "usage: ss_e2e_test full|restart|gone ADDRESS | dump ADDRESS DIR N | polled ADDRESS N | rhythm ADDRESS MS [off] [nobell]\n");
    if (rc == 2) return 2;
    if (failures || rc) printf("RESULT failed %d\n", failures);
    else printf("RESULT ok\n");
    return failures || rc ? 1 : 0;
}
