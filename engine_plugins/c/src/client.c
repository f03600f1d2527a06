/* client.c: the client, its I/O thread and the sessions (interop/client.py is the reference).
 *
 * Ownership and threads:
 *  - the I/O thread owns the ZeroMQ context's sockets (the DEALER and its monitor) and is the only
 *    thread that sends or receives; it encodes every message itself, with the session's current id;
 *  - callers hand it work through two queues: control requests (a list under `client->lock`, the
 *    caller waiting on `client->cond` for the answer) and frames (a small per-session ring under
 *    `session->lock`, so the render thread never touches the client lock); a byte on a pipe wakes it;
 *  - answers come back as events in a per-session ring under `session->lock`;
 *  - lock order: client->lock, then session->lock. Nothing blocks while holding session->lock.
 *
 * What must hold: a slot is handed out by ss_acquire only when its previous frame was answered or
 * (shm) released; a frame is sent with the id of the session's current service-side incarnation, or
 * reported late; every frame submitted gets exactly one DONE, LATE or ERROR event. */
#define _GNU_SOURCE /* SCHED_BATCH */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include <poll.h>
#ifdef __linux__
#include <sys/eventfd.h>
#endif

#include "codec.h"
#include "doorbell.h"
#include "ring.h"

#define EVENT_CAP 64
#define FRAME_CAP 16
#define HELLO_WAIT_MS 1000.0
/* The rhythm's windows: the contract's (interop/doorbell.py; the service spins by the same numbers).
 * The submit's lead was 300 us (the I/O thread predicts its own render thread): on the H200 machine
 * 1-2% of 60 fps submits still found the I/O thread asleep and paid its wake-up, 60-100 us, as the
 * service's 300 us lead had missed its frames (benchmarks/NOTES.md v0.11). */
#define SPIN_LEAD_NS (SS_BELL_SPIN_LEAD_US * 1000ull)        /* awake this long before an expected submit */
#define ANSWER_LEAD_NS (SS_BELL_SPIN_LEAD_US * 1000ull)      /* and before an expected answer */
#define SPIN_TAIL_NS (SS_BELL_SPIN_TAIL_US * 1000ull)        /* and at most this long after it */
#define SPIN_DEV_NS (SS_BELL_SPIN_SLACK_US * 1000ull)        /* plus twice the rhythm's deviation, up to this */
#define BELL_LOOK_NS 20000u    /* while spinning, look at the doorbells this long between socket polls */

/* ---- errors ---------------------------------------------------------------------------------- */

static __thread char err_code[32];
static __thread char err_message[256];

void ss_set_error(const char *code, const char *fmt, ...) {
    va_list ap;
    snprintf(err_code, sizeof err_code, "%s", code);
    va_start(ap, fmt);
    vsnprintf(err_message, sizeof err_message, fmt, ap);
    va_end(ap);
}

static ss_status fail(ss_status st, const char *code, const char *message) {
    ss_set_error(code, "%s", message);
    return st;
}

const char *ss_last_error_code(void) { return err_code; }
const char *ss_last_error_message(void) { return err_message; }
int ss_abi_version(void) { return SS_ABI_VERSION; }

const char *ss_status_name(ss_status s) {
    switch (s) {
    case SS_OK: return "ok";
    case SS_BUSY: return "busy";
    case SS_NO_EVENT: return "no_event";
    case SS_INVALID_ARGUMENT: return "invalid_argument";
    case SS_WRONG_STATE: return "wrong_state";
    case SS_UNAVAILABLE: return "unavailable";
    case SS_REFUSED: return "refused";
    case SS_NO_CUDA: return "no_cuda";
    case SS_CUDA_FAILED: return "cuda_failed";
    case SS_SYSTEM_FAILED: return "system_failed";
    case SS_OUT_OF_MEMORY: return "out_of_memory";
    }
    return "unknown";
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- state ----------------------------------------------------------------------------------- */

typedef enum { REQ_OPEN, REQ_PROMPT, REQ_PARAMS, REQ_STATS, REQ_CLOSE } req_kind;

typedef struct ss_request {
    struct ss_request *next;
    int refs;                   /* the caller and the I/O thread; the last one frees */
    req_kind kind;
    ss_session *session;        /* NULL once the caller gave up waiting */
    uint64_t req;               /* assigned when sent */
    int sent, finished;
    ss_status status;
    ss_reply reply;
    ss_prompt prompt;
    uint32_t blend_frames;
    ss_params params;
} ss_request;

typedef struct pending_frame {
    uint64_t seq;
    uint32_t slot;
    int has_info;
    ss_frame_info info;
    uint64_t rung_ns;           /* when ss_submit rang it in the doorbell (0: not rung, ZeroMQ alone carries it) */
} pending_frame;

struct ss_session {
    ss_client *client;
    ss_session *next;
    pthread_mutex_t lock;
    /* what "open" sends, kept for reopening */
    uint32_t width, height, channel_count;
    ss_channel *channels;
    ss_prompt prompt;           /* client->lock */
    ss_params params;           /* client->lock */
    uint64_t seed;
    ss_ring *ring;
    /* the service side (I/O thread, read under session->lock) */
    uint64_t id;
    int live, need_reopen;
    uint64_t reopen_req;
    /* the frame path (session->lock) */
    uint64_t seq;
    uint32_t next_slot;
    uint64_t slot_seq[SS_MAX_SLOTS], slot_answered[SS_MAX_SLOTS];
    int acquired[SS_MAX_SLOTS];
    ss_event events[EVENT_CAP];
    unsigned ev_head, ev_count;
    uint64_t events_lost;
    pending_frame frames[FRAME_CAP];
    unsigned fr_head, fr_count;
    /* the I/O thread's own: when it sent each slot's last frame (ss_event.sent_ns) */
    uint64_t io_sent_seq[SS_MAX_SLOTS], io_sent_ns[SS_MAX_SLOTS];
    /* the doorbell (interop/doorbell.py): made at create, used while the service says it attached it */
    ss_bell *bell;
    int bell_on;                /* the I/O thread writes (atomic), the others read */
    msgpack_sbuffer bell_buf;   /* session->lock: ss_submit's encoding of the frame it rings (kept allocated) */
    uint64_t bell_answers;      /* session->lock: answers taken from the doorbell before their ZeroMQ copy */
    uint64_t bell_polled;       /* session->lock: those ss_poll took itself */
    /* The lane to the engine has two takers, the I/O thread and ss_poll: one at a time (bell_taker,
     * atomic, taken with an exchange; whoever holds it pops, decodes and answers). An answer ss_poll
     * popped but could not hand over (the session lock busy) waits in `stash` for the I/O thread. */
    int bell_taker;
    int stashed;
    ss_reply stash;
    uint64_t stash_ns;
    /* session->lock: the last answer ss_poll took, for the I/O thread's learning (0: none) */
    uint64_t polled_seq, polled_rtt_ns;
};

enum { DOWN, HELLO, UP };

typedef struct beat {           /* a rhythm as learn() keeps it, in ns */
    double x[SS_BELL_BEAT_SAMPLES];
    uint64_t n;                 /* samples seen */
    double mid, dev;            /* their median and median distance from it (0 before the first) */
} beat;

struct ss_client {
    char *address, *name;
    uint32_t timeout_ms;
    void *ctx, *sock, *mon;
    unsigned mon_count;
    pthread_t io;
    int io_started;
    int pipe_r, pipe_w;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ss_request *queue;          /* waiting to be sent (client->lock) */
    ss_request *sent;           /* waiting for their answer (client->lock) */
    ss_session *sessions;       /* client->lock */
    int stop;
    int sleeping;               /* atomic: the I/O thread is in (or entering) zmq_poll */
    /* the frame rhythm (ss_client_config's comment): ss_submit stores its time, the I/O thread
     * learns from it and from the answers */
    int anticipate;
    int doorbell;               /* give sessions a doorbell (not SS_CLIENT_NO_DOORBELL) */
    uint64_t last_submit_ns;    /* atomic */
    uint64_t submits, wakes, unwoken; /* atomic: ss_client_info's */
    uint64_t seen_submit_ns, answer_due_ns, due_seq, spun_ns;
    beat period, rtt;           /* the submit interval and the send-to-answer time (I/O thread) */
    /* the connection (I/O thread; the info fields under client->lock) */
    int state, ever_up, connected, lost;
    uint64_t reconnects;
    uint32_t heartbeat_ms, reap_after_ms, max_sessions;
    char service[64];
    char hello_code[32], hello_message[224];
    uint64_t next_req, hello_req;
    double last_heard, last_sent, retry_at, hello_deadline;
};

static char *dup_str(const char *s) {
    size_t n;
    char *d;
    if (!s) return NULL;
    n = strlen(s) + 1;
    d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void prompt_free(ss_prompt *p) {
    for (int i = 0; i < 4; i++) free(p->texts[i]);
    memset(p, 0, sizeof *p);
}

static int prompt_copy(ss_prompt *dst, const ss_prompt *src) {
    memset(dst, 0, sizeof *dst);
    dst->count = src->count;
    for (int i = 0; i < 4; i++) {
        dst->weights[i] = src->weights[i];
        if (src->texts[i] && !(dst->texts[i] = dup_str(src->texts[i]))) {
            prompt_free(dst);
            return -1;
        }
    }
    return 0;
}

/* Wake the I/O thread, with a syscall only when it sleeps (or is about to): it sets `sleeping`
 * before its last look at the queues and clears it after zmq_poll returns.
 *
 * On Linux the wake is an eventfd, not a pipe: a pipe write wakes its reader "synchronously", a hint
 * that the writer is about to sleep, which steers the scheduler toward the writer's CPU; the render
 * thread does not sleep, and the I/O thread (a batch thread, which preempts no one) would wait behind
 * it. An eventfd wake carries no such hint: the I/O thread goes to an idle CPU when there is one. */
static int wake(ss_client *c) {
    if (__atomic_load_n(&c->sleeping, __ATOMIC_SEQ_CST)) {
#ifdef __linux__
        uint64_t one = 1;
        ssize_t n = write(c->pipe_w, &one, sizeof one); /* a saturated counter already wakes it */
#else
        char one = 1;
        ssize_t n = write(c->pipe_w, &one, 1); /* a full pipe already wakes it */
#endif
        (void)n;
        return 1;
    }
    return 0;
}

static double median(double *x, unsigned n) { /* sorts x */
    for (unsigned i = 1; i < n; i++)
        for (unsigned j = i; j > 0 && x[j - 1] > x[j]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    return n % 2 ? x[n / 2] : (x[n / 2 - 1] + x[n / 2]) / 2;
}

/* The contract's rule (interop/doorbell.py, Beat): the median of the last SS_BELL_BEAT_SAMPLES
 * samples and their median distance from it, so one long interval (a session's first frame, a level
 * load) moves neither. */
static void learn(beat *b, double x) {
    double s[SS_BELL_BEAT_SAMPLES];
    unsigned n = b->n < SS_BELL_BEAT_SAMPLES ? (unsigned)b->n + 1 : SS_BELL_BEAT_SAMPLES;
    b->x[b->n++ % SS_BELL_BEAT_SAMPLES] = x;
    memcpy(s, b->x, sizeof s);
    b->mid = median(s, n);
    for (unsigned i = 0; i < n; i++) s[i] = b->x[i] > b->mid ? b->x[i] - b->mid : b->mid - b->x[i];
    b->dev = median(s, n);
}

/* The I/O thread: whether `now` lies in a window around an expected submit or answer (*spin), else
 * the time the next window opens (*wake_at, 0: none known). */
static void window(uint64_t now, uint64_t expect, double dev, uint64_t lead_ns, uint64_t *wake_at, int *spin) {
    uint64_t slack = 2 * dev < SPIN_DEV_NS ? (uint64_t)(2 * dev) : SPIN_DEV_NS;
    uint64_t lead = lead_ns + slack, tail = SPIN_TAIL_NS + slack;
    if (now + lead >= expect && now <= expect + tail) *spin = 1;
    else if (now + lead < expect && (*wake_at == 0 || expect - lead < *wake_at)) *wake_at = expect - lead;
}

static void anticipate(ss_client *c, uint64_t now, uint64_t *wake_at, int *spin) {
    uint64_t t = __atomic_load_n(&c->last_submit_ns, __ATOMIC_RELAXED);
    *wake_at = 0;
    *spin = 0;
    if (t != c->seen_submit_ns) {
        if (c->seen_submit_ns && t - c->seen_submit_ns < 1000000000u)
            learn(&c->period, (double)(t - c->seen_submit_ns));
        c->seen_submit_ns = t;
    }
    if (!c->anticipate || c->state != UP) return;
    /* a steady rhythm (2-100 ms, deviations under a quarter of it), submits in the last second */
    if (c->period.mid >= SS_BELL_MIN_BEAT_MS * 1e6 && c->period.mid <= SS_BELL_MAX_BEAT_MS * 1e6 &&
        c->period.dev < c->period.mid / 4 &&
        now - c->seen_submit_ns < 1000000000u) {
        uint64_t next = c->seen_submit_ns + (uint64_t)c->period.mid;
        while (next + SPIN_TAIL_NS + SPIN_DEV_NS < now) next += (uint64_t)c->period.mid; /* skipped frames */
        window(now, next, c->period.dev, SPIN_LEAD_NS, wake_at, spin);
    }
    if (c->answer_due_ns) {
        if (now > c->answer_due_ns + SPIN_TAIL_NS + SPIN_DEV_NS) c->answer_due_ns = 0; /* late: sleep */
        else window(now, c->answer_due_ns, c->rtt.dev, ANSWER_LEAD_NS, wake_at, spin);
    }
}

/* The frame path never waits for the I/O thread: it spins briefly on the session lock and gives up
 * (the caller then answers as if there were nothing, or busy) if the I/O thread holds it longer,
 * e.g. because the OS preempted it there. */
static int frame_lock(ss_session *s) {
    for (int i = 0; i < 100; i++) {
        if (pthread_mutex_trylock(&s->lock) == 0) return 1;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    return 0;
}

/* Every thread but the render thread takes session->lock with this: it spins (and yields) instead of
 * sleeping in the kernel, so the lock never has a sleeping waiter and the render thread's unlock never
 * has to wake one (a futex system call, with an inter-processor interrupt behind it). The render
 * thread holds the lock for a few hundred nanoseconds at most: nothing slow runs under it. */
static void lock_waiting(ss_session *s) {
    for (unsigned i = 0; pthread_mutex_trylock(&s->lock) != 0; i++) {
        if (i < 256) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else if (i < 4096) {
            sched_yield();
        } else { /* the holder was preempted: let it run */
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
}

/* session->lock held */
static void push_event(ss_session *s, const ss_event *ev) {
    if (s->ev_count == EVENT_CAP) { /* the engine stopped polling: keep the newest */
        s->ev_head = (s->ev_head + 1) % EVENT_CAP;
        s->ev_count--;
        s->events_lost++;
    }
    s->events[(s->ev_head + s->ev_count) % EVENT_CAP] = *ev;
    s->ev_count++;
}

static void event_of(ss_event *ev, ss_event_kind kind, uint64_t seq, int32_t slot, const char *code,
                     const char *message) {
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;
    ev->seq = seq;
    ev->slot = slot;
    if (code) snprintf(ev->code, sizeof ev->code, "%s", code);
    if (message) snprintf(ev->message, sizeof ev->message, "%s", message);
}

/* session->lock held: every frame submitted but not answered becomes late */
static void frames_lost(ss_session *s, const char *reason, const char *message) {
    ss_event ev;
    for (uint32_t i = 0; i < s->ring->desc.slots; i++) {
        if (s->slot_seq[i] > s->slot_answered[i]) {
            event_of(&ev, SS_EVENT_LATE, s->slot_seq[i], (int32_t)i, reason, message);
            ev.late = 1;
            push_event(s, &ev);
        }
        s->slot_seq[i] = s->slot_answered[i] = 0; /* a slot acquired now stays acquired: submit it after the reopen */
    }
    s->fr_count = 0;
}

/* ---- the I/O thread -------------------------------------------------------------------------- */

static void drop_socket(ss_client *c) {
    if (c->sock) {
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->sock);
        c->sock = NULL;
    }
    if (c->mon) {
        zmq_close(c->mon);
        c->mon = NULL;
    }
}

static int send_buf(ss_client *c, msgpack_sbuffer *buf) {
    int rc = c->sock ? zmq_send(c->sock, buf->data, buf->size, ZMQ_DONTWAIT) : -1;
    msgpack_sbuffer_clear(buf);
    if (rc >= 0) c->last_sent = now_s();
    return rc >= 0 ? 0 : -1;
}

static void new_socket(ss_client *c) {
    char mon_addr[96];
    int zero = 0, hwm = 1000, max = SS_MAX_MESSAGE_BYTES;
    int64_t maxmsg = max;
    drop_socket(c);
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock) return;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(c->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(c->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    /* Liveness is the connection's, kept by ZeroMQ's own heartbeats (libzmq's I/O thread answers
     * them while the service's one thread runs a long frame or captures a graph at open): a peer
     * that stops answering for reap_after_ms loses the connection, which the monitor reports.
     * A connection keeps the settings it was made with: the welcome's apply from the next one. */
    {
        int ivl = (int)c->heartbeat_ms, timeout = (int)c->reap_after_ms;
        zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
        zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_TIMEOUT, &timeout, sizeof timeout);
    }
    snprintf(mon_addr, sizeof mon_addr, "inproc://ss-monitor-%p-%u", (void *)c, c->mon_count++);
    if (zmq_socket_monitor(c->sock, mon_addr, ZMQ_EVENT_DISCONNECTED) == 0) {
        c->mon = zmq_socket(c->ctx, ZMQ_PAIR);
        if (c->mon && zmq_connect(c->mon, mon_addr) != 0) {
            zmq_close(c->mon);
            c->mon = NULL;
        }
    }
    if (zmq_connect(c->sock, c->address) != 0) drop_socket(c);
}

static void start_hello(ss_client *c, double now) {
    msgpack_sbuffer buf;
    new_socket(c);
    c->state = HELLO;
    c->hello_deadline = now + HELLO_WAIT_MS / 1000.0;
    c->hello_req = ++c->next_req;
    c->lost = 0;
    msgpack_sbuffer_init(&buf);
    ss_enc_hello(&buf, c->hello_req, c->name);
    send_buf(c, &buf);
    msgpack_sbuffer_destroy(&buf);
}

static void request_release(ss_request *r) {
    if (--r->refs == 0) {
        prompt_free(&r->prompt);
        free(r);
    }
}

static void finish(ss_client *c, ss_request *r, ss_status st, const ss_reply *reply) {
    r->finished = 1;
    r->status = st;
    if (reply) r->reply = *reply;
    pthread_cond_broadcast(&c->cond);
    request_release(r);
}

/* client->lock held: the connection is gone; every session waits to be reopened */
static void go_down(ss_client *c, const char *why) {
    ss_event ev;
    ss_request *r;
    drop_socket(c);
    c->state = DOWN;
    c->connected = 0;
    c->retry_at = now_s();
    for (ss_session *s = c->sessions; s; s = s->next) {
        lock_waiting(s);
        if (s->live || s->need_reopen) {
            __atomic_store_n(&s->live, 0, __ATOMIC_RELEASE);
            s->need_reopen = 1;
            frames_lost(s, SS_LATE_SERVICE_RESTARTED, why);
            event_of(&ev, SS_EVENT_SERVICE_LOST, 0, -1, "unavailable", why);
            push_event(s, &ev);
        }
        pthread_mutex_unlock(&s->lock);
    }
    while ((r = c->sent) != NULL) {
        c->sent = r->next;
        ss_reply none;
        memset(&none, 0, sizeof none);
        snprintf(none.code, sizeof none.code, "unavailable");
        snprintf(none.message, sizeof none.message, "the service went away: %s", why);
        finish(c, r, SS_UNAVAILABLE, &none);
    }
}

static void encode_open(ss_session *s, uint64_t req, msgpack_sbuffer *buf) {
    ss_enc_open(buf, req, s->width, s->height, s->channels, s->channel_count, &s->ring->desc, &s->prompt,
                &s->params, s->seed, s->bell ? ss_bell_name(s->bell) : NULL);
}

/* client->lock held */
static void send_requests(ss_client *c) {
    msgpack_sbuffer buf;
    ss_request *r;
    msgpack_sbuffer_init(&buf);
    while ((r = c->queue) != NULL) {
        c->queue = r->next;
        if (!r->session) { /* the caller gave up before it was sent */
            request_release(r);
            continue;
        }
        r->req = ++c->next_req;
        switch (r->kind) {
        case REQ_OPEN: encode_open(r->session, r->req, &buf); break;
        case REQ_PROMPT: ss_enc_prompt(&buf, r->req, r->session->id, &r->prompt, r->blend_frames); break;
        case REQ_PARAMS: ss_enc_params(&buf, r->req, r->session->id, &r->params); break;
        case REQ_STATS: ss_enc_stats(&buf, r->req, r->session->id); break;
        case REQ_CLOSE: ss_enc_close(&buf, r->req, r->session->id); break;
        }
        if (send_buf(c, &buf) != 0) {
            ss_reply none;
            memset(&none, 0, sizeof none);
            snprintf(none.code, sizeof none.code, "unavailable");
            snprintf(none.message, sizeof none.message, "the service is not taking messages");
            finish(c, r, SS_UNAVAILABLE, &none);
            continue;
        }
        r->sent = 1;
        r->next = c->sent;
        c->sent = r;
    }
    msgpack_sbuffer_destroy(&buf);
}

/* client->lock held */
static void send_frames(ss_client *c) {
    msgpack_sbuffer buf;
    pending_frame batch[FRAME_CAP];
    msgpack_sbuffer_init(&buf);
    for (ss_session *s = c->sessions; s; s = s->next) {
        unsigned n;
        uint64_t id;
        lock_waiting(s);
        n = s->fr_count;
        id = s->id;
        for (unsigned i = 0; i < n; i++) batch[i] = s->frames[(s->fr_head + i) % FRAME_CAP];
        s->fr_head = (s->fr_head + n) % FRAME_CAP;
        s->fr_count = 0;
        pthread_mutex_unlock(&s->lock);
        for (unsigned i = 0; i < n; i++) {
            int sent;
            ss_enc_frame(&buf, id, batch[i].seq, batch[i].slot, batch[i].has_info ? &batch[i].info : NULL);
            sent = c->sock && zmq_send(c->sock, buf.data, buf.size, ZMQ_DONTWAIT) >= 0;
            if (sent) c->last_sent = now_s();
            msgpack_sbuffer_clear(&buf);
            if (sent || batch[i].rung_ns) {
                /* a frame ss_submit rang is in flight from then, whether or not its ZeroMQ copy went
                 * (interop/doorbell.py): only the connection's loss (frames_lost) gives up on it */
                uint64_t went = batch[i].rung_ns ? batch[i].rung_ns : now_ns();
                if (!batch[i].rung_ns) { /* ss_poll reads them; ss_submit stored a rung frame's */
                    __atomic_store_n(&s->io_sent_seq[batch[i].slot], batch[i].seq, __ATOMIC_RELAXED);
                    __atomic_store_n(&s->io_sent_ns[batch[i].slot], went, __ATOMIC_RELAXED);
                }
                if (c->rtt.mid > 0) { /* the answer is expected about then: be awake for it */
                    c->answer_due_ns = went + (uint64_t)c->rtt.mid;
                    c->due_seq = batch[i].seq;
                }
            } else {
                ss_event ev;
                lock_waiting(s);
                if (s->slot_seq[batch[i].slot] == batch[i].seq) s->slot_answered[batch[i].slot] = batch[i].seq;
                event_of(&ev, SS_EVENT_ERROR, batch[i].seq, (int32_t)batch[i].slot, "unavailable",
                         "the service is not taking messages");
                push_event(s, &ev);
                pthread_mutex_unlock(&s->lock);
            }
        }
    }
    msgpack_sbuffer_destroy(&buf);
}

static ss_session *session_by_id(ss_client *c, uint64_t id) {
    for (ss_session *s = c->sessions; s; s = s->next)
        if (s->id == id && (s->live || s->need_reopen)) return s;
    return NULL;
}

/* session->lock held: a done, late or error about one frame of `s`, received at `received_ns`
 * (`from_bell`: its doorbell copy). 0 for an answer already had (its other copy); else 1, with
 * *rtt its send-to-answer time (0: not known) for the I/O thread to learn. */
static int answer_locked(ss_session *s, const ss_reply *m, uint64_t received_ns, int from_bell, uint64_t *rtt) {
    ss_event ev;
    int32_t slot = -1;
    *rtt = 0;
    if (!s->live) return 0;
    for (uint32_t i = 0; i < s->ring->desc.slots; i++)
        if (s->slot_seq[i] == m->seq) slot = (int32_t)i;
    if (slot < 0 && m->slot >= 0 && m->slot < (int64_t)s->ring->desc.slots) slot = (int32_t)m->slot;
    if (__atomic_load_n(&s->bell_on, __ATOMIC_ACQUIRE) && (m->type == SS_REPLY_DONE || m->type == SS_REPLY_LATE) &&
        slot >= 0 && s->slot_answered[slot] >= m->seq)
        return 0; /* the second copy of an answer (doorbell and ZeroMQ) */
    if (slot >= 0 && s->slot_answered[slot] < m->seq) s->slot_answered[slot] = m->seq;
    s->bell_answers += (uint64_t)from_bell;
    if (m->type == SS_REPLY_DONE) {
        event_of(&ev, SS_EVENT_DONE, m->seq, slot, NULL, NULL);
        ev.late = m->late;
        ev.queue_ms = m->queue_ms;
        ev.model_ms = m->model_ms;
        ev.write_ms = m->write_ms;
        ev.total_ms = m->total_ms;
    } else if (m->type == SS_REPLY_LATE) {
        event_of(&ev, SS_EVENT_LATE, m->seq, slot, m->code, NULL);
        ev.late = 1;
    } else {
        event_of(&ev, SS_EVENT_ERROR, m->seq, slot, m->code, m->message);
    }
    if (slot >= 0 && __atomic_load_n(&s->io_sent_seq[slot], __ATOMIC_RELAXED) == m->seq)
        ev.sent_ns = __atomic_load_n(&s->io_sent_ns[slot], __ATOMIC_RELAXED);
    ev.received_ns = received_ns;
    if (m->type == SS_REPLY_DONE && ev.sent_ns && received_ns > ev.sent_ns) *rtt = received_ns - ev.sent_ns;
    push_event(s, &ev);
    return 1;
}

/* I/O thread: what an answer teaches the rhythm */
static void answered(ss_client *c, uint64_t seq, uint64_t rtt) {
    if (rtt) learn(&c->rtt, (double)rtt);
    if (seq == c->due_seq) c->answer_due_ns = 0;
}

/* client->lock held: a done, late or error about one frame from the socket, received at `received_ns` */
static void frame_answer(ss_client *c, const ss_reply *m, uint64_t received_ns) {
    ss_session *s = session_by_id(c, m->session);
    uint64_t rtt;
    if (!s) return;
    lock_waiting(s);
    if (answer_locked(s, m, received_ns, 0, &rtt)) answered(c, m->seq, rtt);
    pthread_mutex_unlock(&s->lock);
}

/* The taker of `s`'s doorbell lane to the engine (bell_taker held): the next record popped and
 * decoded into *m (1), or 0 when the lane is empty. Records that are not this session's done or
 * late are consumed and skipped. */
static int bell_next(ss_session *s, ss_reply *m, uint64_t *received_ns) {
    char data[SS_BELL_RECORD_BYTES];
    long n;
    for (int k = 0; k < SS_BELL_RECORDS && (n = ss_bell_pop(s->bell, SS_BELL_TO_ENGINE, data, sizeof data)) != 0; k++) {
        *received_ns = now_ns();
        if (n > 0 && ss_decode_reply(data, (size_t)n, m) == 0 && (m->type == SS_REPLY_DONE || m->type == SS_REPLY_LATE) &&
            m->has_session && m->session == s->id)
            return 1;
    }
    return 0;
}

static int bell_take(ss_session *s) { return !__atomic_exchange_n(&s->bell_taker, 1, __ATOMIC_ACQUIRE); }
static void bell_give(ss_session *s) { __atomic_store_n(&s->bell_taker, 0, __ATOMIC_RELEASE); }

/* ss_poll, when no event waits: the session's doorbell answer taken on the caller's thread, so that
 * its hand-off does not wait for the I/O thread to be scheduled. Never waits: the lane busy (the I/O
 * thread taking it) or the session lock busy leave the answer to the I/O thread. */
static void poll_bell(ss_session *s) {
    ss_reply m;
    uint64_t t, rtt;
    if (!bell_take(s)) return;
    if (!s->stashed && bell_next(s, &m, &t)) {
        if (frame_lock(s)) {
            if (answer_locked(s, &m, t, 1, &rtt)) {
                s->bell_polled++;
                s->polled_rtt_ns = rtt;
                __atomic_store_n(&s->polled_seq, m.seq, __ATOMIC_RELAXED);
            }
            pthread_mutex_unlock(&s->lock);
        } else { /* the I/O thread answers it on its next pass */
            s->stash = m;
            s->stash_ns = t;
            __atomic_store_n(&s->stashed, 1, __ATOMIC_RELAXED);
        }
    }
    bell_give(s);
}

/* client->lock held */
static void reopen_all(ss_client *c) {
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    for (ss_session *s = c->sessions; s; s = s->next) {
        if (!s->need_reopen) continue;
        s->reopen_req = ++c->next_req;
        encode_open(s, s->reopen_req, &buf);
        send_buf(c, &buf);
    }
    msgpack_sbuffer_destroy(&buf);
}

/* client->lock held; `received_ns`: when the message came off the socket */
static void handle(ss_client *c, const char *data, size_t size, uint64_t received_ns) {
    ss_reply m;
    if (ss_decode_reply(data, size, &m) != 0) return; /* not from a service we understand */
    c->last_heard = now_s();
    if (m.type == SS_REPLY_BYE) {
        c->lost = 1;
        return;
    }
    if (c->state == HELLO) {
        if (m.has_req && m.req == c->hello_req) {
            if (m.type == SS_REPLY_WELCOME) {
                c->state = UP;
                c->connected = 1;
                c->heartbeat_ms = m.heartbeat_ms ? m.heartbeat_ms : 500;
                c->reap_after_ms = m.reap_after_ms ? m.reap_after_ms : SS_DEFAULT_REAP_AFTER_MS;
                c->max_sessions = m.max_sessions;
                snprintf(c->service, sizeof c->service, "%s", m.service);
                if (c->ever_up) c->reconnects++;
                c->ever_up = 1;
                c->hello_code[0] = 0;
                reopen_all(c);
            } else if (m.type == SS_REPLY_ERROR) {
                snprintf(c->hello_code, sizeof c->hello_code, "%s", m.code);
                snprintf(c->hello_message, sizeof c->hello_message, "%s", m.message);
                drop_socket(c);
                c->state = DOWN;
                c->retry_at = now_s() + 1.0;
            }
            pthread_cond_broadcast(&c->cond);
        }
        return;
    }
    if (m.type == SS_REPLY_ERROR &&
        (!strcmp(m.code, SS_ERR_HELLO_FIRST) ||
         (!strcmp(m.code, SS_ERR_UNKNOWN_SESSION) && m.has_session && session_by_id(c, m.session)))) {
        /* the service no longer knows this connection (it restarted under ZeroMQ's own reconnect, or
         * reaped us): start again, as after a lost connection */
        c->lost = 1;
    }
    if (m.type == SS_REPLY_DONE || m.type == SS_REPLY_LATE || (m.type == SS_REPLY_ERROR && m.has_seq)) {
        if (m.has_session) frame_answer(c, &m, received_ns);
        return;
    }
    if (!m.has_req) return;
    for (ss_session *s = c->sessions; s; s = s->next) {
        if (!s->need_reopen || s->reopen_req != m.req) continue;
        lock_waiting(s);
        s->need_reopen = 0;
        if (m.type == SS_REPLY_OPENED) {
            ss_event ev;
            s->id = m.session;
            __atomic_store_n(&s->bell_on, s->bell && m.doorbell, __ATOMIC_RELEASE);
            __atomic_store_n(&s->live, 1, __ATOMIC_RELEASE);
            event_of(&ev, SS_EVENT_REOPENED, 0, -1, NULL, "the service is back; the session was reopened");
            push_event(s, &ev);
        } else {
            ss_event ev;
            event_of(&ev, SS_EVENT_ERROR, 0, -1, m.code[0] ? m.code : SS_ERR_INTERNAL, m.message);
            push_event(s, &ev);
        }
        pthread_mutex_unlock(&s->lock);
        return;
    }
    for (ss_request **p = &c->sent; *p; p = &(*p)->next) {
        ss_request *r = *p;
        if (r->req != m.req) continue;
        *p = r->next;
        if (m.type == SS_REPLY_ERROR) {
            finish(c, r, SS_REFUSED, &m);
        } else if (r->kind == REQ_OPEN && m.type == SS_REPLY_OPENED && !r->session) {
            /* the caller gave up waiting: do not leave the service a session nobody owns */
            msgpack_sbuffer buf;
            msgpack_sbuffer_init(&buf);
            ss_enc_close(&buf, ++c->next_req, m.session);
            send_buf(c, &buf);
            msgpack_sbuffer_destroy(&buf);
            finish(c, r, SS_UNAVAILABLE, &m);
        } else {
            if (r->kind == REQ_OPEN && r->session) {
                lock_waiting(r->session);
                r->session->id = m.session;
                __atomic_store_n(&r->session->bell_on, r->session->bell && m.doorbell, __ATOMIC_RELEASE);
                __atomic_store_n(&r->session->live, 1, __ATOMIC_RELEASE);
                pthread_mutex_unlock(&r->session->lock);
            }
            finish(c, r, SS_OK, &m);
        }
        return;
    }
}

static void read_monitor(ss_client *c) {
    for (;;) {
        zmq_msg_t msg;
        uint16_t event = 0;
        int more = 0;
        size_t more_size = sizeof more;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, c->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        if (zmq_msg_size(&msg) >= 2) memcpy(&event, zmq_msg_data(&msg), 2);
        zmq_msg_close(&msg);
        zmq_getsockopt(c->mon, ZMQ_RCVMORE, &more, &more_size);
        while (more) { /* the endpoint frame */
            zmq_msg_init(&msg);
            zmq_msg_recv(&msg, c->mon, 0);
            zmq_msg_close(&msg);
            zmq_getsockopt(c->mon, ZMQ_RCVMORE, &more, &more_size);
        }
        if (event == ZMQ_EVENT_DISCONNECTED && c->state == UP) c->lost = 1;
    }
}

/* client->lock held: what ss_poll's own takes teach the rhythm, then the answers waiting in the
 * sessions' doorbells (done and late only) and the one ss_poll left in the stash */
static void take_bells(ss_client *c) {
    for (ss_session *s = c->sessions; s; s = s->next) {
        ss_reply m;
        uint64_t t, rtt;
        if (!__atomic_load_n(&s->bell_on, __ATOMIC_ACQUIRE)) continue;
        if (__atomic_load_n(&s->polled_seq, __ATOMIC_RELAXED)) { /* (a hint: set under the lock) */
            lock_waiting(s);
            if (s->polled_seq) answered(c, s->polled_seq, s->polled_rtt_ns);
            s->polled_seq = s->polled_rtt_ns = 0;
            pthread_mutex_unlock(&s->lock);
        }
        /* the lane only when something is there: this runs on every pass of a spinning I/O thread */
        if (!ss_bell_pending(s->bell, SS_BELL_TO_ENGINE) && !__atomic_load_n(&s->stashed, __ATOMIC_RELAXED)) continue;
        if (!bell_take(s)) continue; /* ss_poll is taking this lane's answer: the next pass looks again */
        if (s->stashed) {
            lock_waiting(s);
            if (answer_locked(s, &s->stash, s->stash_ns, 1, &rtt)) answered(c, s->stash.seq, rtt);
            pthread_mutex_unlock(&s->lock);
            __atomic_store_n(&s->stashed, 0, __ATOMIC_RELAXED);
        }
        for (int k = 0; k < SS_BELL_RECORDS && bell_next(s, &m, &t); k++) { /* at most a lane's worth a pass */
            lock_waiting(s);
            if (answer_locked(s, &m, t, 1, &rtt)) answered(c, m.seq, rtt);
            pthread_mutex_unlock(&s->lock);
        }
        bell_give(s);
    }
}

/* client->lock held */
static int frames_waiting(ss_client *c) {
    int any = 0;
    for (ss_session *s = c->sessions; s && !any; s = s->next) any = __atomic_load_n(&s->fr_count, __ATOMIC_SEQ_CST) != 0;
    return any;
}

/* client->lock held: whether a session uses a doorbell, whether an answer waits in one */
static int bells_on(ss_client *c) {
    for (ss_session *s = c->sessions; s; s = s->next)
        if (__atomic_load_n(&s->bell_on, __ATOMIC_RELAXED)) return 1;
    return 0;
}

static int bells_pending(ss_client *c) {
    for (ss_session *s = c->sessions; s; s = s->next)
        if ((__atomic_load_n(&s->bell_on, __ATOMIC_RELAXED) && ss_bell_pending(s->bell, SS_BELL_TO_ENGINE)) ||
            __atomic_load_n(&s->stashed, __ATOMIC_RELAXED))
            return 1;
    return 0;
}

static void *io_main(void *arg) {
    ss_client *c = arg;
#ifdef SCHED_BATCH
    {   /* a batch thread never preempts the thread that woke it: the render thread's ss_submit
         * returns at once instead of yielding its core to this thread's send */
        struct sched_param sp;
        memset(&sp, 0, sizeof sp);
        pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    }
#endif
    pthread_mutex_lock(&c->lock);
    while (!c->stop) {
        double now = now_s(), due;
        int slept;
        long timeout_ms;
        zmq_pollitem_t items[3];
        int n = 0;
        if (c->state == DOWN && now >= c->retry_at) start_hello(c, now);
        if (c->state == HELLO && now > c->hello_deadline) {
            drop_socket(c);
            c->state = DOWN;
            c->retry_at = now;
            continue;
        }
        if (c->state != UP) { /* nothing can be asked of a service that is not there */
            ss_request *r;
            while ((r = c->queue) != NULL) {
                ss_reply none;
                c->queue = r->next;
                memset(&none, 0, sizeof none);
                snprintf(none.code, sizeof none.code, "unavailable");
                snprintf(none.message, sizeof none.message, "not connected to the service");
                finish(c, r, SS_UNAVAILABLE, &none);
            }
        }
        due = c->state == UP ? c->last_sent + c->heartbeat_ms / 1000.0 : c->state == HELLO ? c->hello_deadline : c->retry_at;
        timeout_ms = (long)((due - now) * 1000.0) + 1;
        if (timeout_ms > 50) timeout_ms = 50;
        if (timeout_ms < 0) timeout_ms = 0;
        items[n++] = (zmq_pollitem_t){NULL, c->pipe_r, ZMQ_POLLIN, 0};
        if (c->sock) items[n++] = (zmq_pollitem_t){c->sock, 0, ZMQ_POLLIN, 0};
        if (c->mon) items[n++] = (zmq_pollitem_t){c->mon, 0, ZMQ_POLLIN, 0};
        slept = 0;
        {
            uint64_t tn = now_ns(), wake_at;
            int spin;
            anticipate(c, tn, &wake_at, &spin);
            if (spin) { /* awake: a submit finds `sleeping` clear and makes no system call */
                /* a doorbell's lane is a memory read away, the socket a system call: look at the
                 * lanes and the submit queue for up to BELL_LOOK_NS first (control calls wait that
                 * long for client->lock at most) */
                int hot = 0;
                if (bells_on(c)) {
                    uint64_t until = tn + BELL_LOOK_NS;
                    while (!(hot = bells_pending(c) || frames_waiting(c)) && now_ns() < until) {
#if defined(__x86_64__) || defined(__i386__)
                        __builtin_ia32_pause();
#endif
                    }
                }
                if (!hot) {
                    pthread_mutex_unlock(&c->lock);
                    if (zmq_poll(items, n, 0) == 0) sched_yield(); /* a core shared with the render thread is not ours */
                    pthread_mutex_lock(&c->lock);
                }
                c->spun_ns += now_ns() - tn;
            } else {
                if (wake_at && (long)((wake_at - tn) / 1000000u) < timeout_ms) timeout_ms = (long)((wake_at - tn) / 1000000u);
                __atomic_store_n(&c->sleeping, 1, __ATOMIC_SEQ_CST);
                if (frames_waiting(c)) timeout_ms = 0; /* submitted between the send and the flag */
                pthread_mutex_unlock(&c->lock);
                if (timeout_ms == 0 && wake_at && wake_at - tn < 1000000u && !frames_waiting(c)) {
                    /* under a millisecond to the window: sleep that long on the wake-up and the socket */
                    struct pollfd fds[2];
                    int nf = 1;
                    size_t fd_size = sizeof fds[1].fd;
                    uint64_t left = wake_at - tn;
                    struct timespec ts = {0, (long)left};
                    fds[0].fd = c->pipe_r;
                    fds[0].events = POLLIN;
                    if (c->sock && zmq_getsockopt(c->sock, ZMQ_FD, &fds[1].fd, &fd_size) == 0) {
                        fds[1].events = POLLIN;
                        nf = 2;
                    }
                    ppoll(fds, (nfds_t)nf, &ts, NULL);
                    zmq_poll(items, n, 0);
                } else {
                    zmq_poll(items, n, timeout_ms);
                }
                __atomic_store_n(&c->sleeping, 0, __ATOMIC_SEQ_CST);
                pthread_mutex_lock(&c->lock);
                slept = 1;
            }
        }
        if (slept) { /* the wake-up's count, if any: only a sleeping thread is woken */
            uint64_t drain[8];
            while (read(c->pipe_r, drain, sizeof drain) > 0) {}
        }
        take_bells(c); /* before the socket: an answer's copy there is taken first */
        while (c->sock) {
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, c->sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&msg);
                break;
            }
            handle(c, zmq_msg_data(&msg), zmq_msg_size(&msg), now_ns()); /* copies what it keeps */
            zmq_msg_close(&msg);
        }
        if (c->mon) read_monitor(c);
        now = now_s();
        if (c->state == UP && c->lost) {  /* never because the service is quiet: a slow frame is not a dead service */
            go_down(c, "the service closed the connection");
            continue;
        }
        if (c->state == UP) {
            send_requests(c);
            send_frames(c);
            if (now - c->last_sent > c->heartbeat_ms / 1000.0) {
                msgpack_sbuffer buf;
                msgpack_sbuffer_init(&buf);
                ss_enc_heartbeat(&buf, wall_s());
                send_buf(c, &buf);
                msgpack_sbuffer_destroy(&buf);
            }
        }
    }
    drop_socket(c);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* ---- control calls --------------------------------------------------------------------------- */

static int wait_until(ss_client *c, double deadline) {
    struct timespec ts;
    double t = deadline;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    return pthread_cond_timedwait(&c->cond, &c->lock, &ts);
}

/* Queue a request, wait for its answer. Returns with client->lock NOT held. */
static ss_status call(ss_client *c, ss_request *r, ss_reply *reply) {
    double deadline = now_s() + c->timeout_ms / 1000.0;
    ss_status st;
    int live = 1;
    r->refs = 2;
    if (r->kind != REQ_OPEN) {
        lock_waiting(r->session);
        live = r->session->live;
        pthread_mutex_unlock(&r->session->lock);
    }
    pthread_mutex_lock(&c->lock);
    if (c->state != UP || !live) {
        pthread_mutex_unlock(&c->lock);
        r->refs = 1;
        request_release(r);
        return fail(SS_UNAVAILABLE, "unavailable", live ? "not connected to the service"
                                                        : "the session is not open on the service (reconnecting)");
    }
    r->next = NULL;
    {
        ss_request **p = &c->queue;
        while (*p) p = &(*p)->next;
        *p = r;
    }
    wake(c);
    while (!r->finished && now_s() < deadline) wait_until(c, deadline);
    if (!r->finished) {
        r->session = NULL; /* the I/O thread drops it, or frees it when the answer comes */
        request_release(r);
        pthread_mutex_unlock(&c->lock);
        return fail(SS_UNAVAILABLE, "unavailable", "the service did not answer in time");
    }
    st = r->status;
    if (reply) *reply = r->reply;
    if (st != SS_OK) ss_set_error(r->reply.code[0] ? r->reply.code : "internal", "%s", r->reply.message);
    request_release(r);
    pthread_mutex_unlock(&c->lock);
    return st;
}

static ss_request *new_request(req_kind kind, ss_session *s) {
    ss_request *r = calloc(1, sizeof *r);
    if (r) {
        r->kind = kind;
        r->session = s;
        ss_params_init(&r->params);
    }
    return r;
}

static void client_free(ss_client *c) {
    if (c->io_started) {
        pthread_mutex_lock(&c->lock);
        c->stop = 1;
        pthread_mutex_unlock(&c->lock);
        wake(c);
        pthread_join(c->io, NULL);
    }
    while (c->queue) {
        ss_request *r = c->queue;
        c->queue = r->next;
        free(r);
    }
    while (c->sent) {
        ss_request *r = c->sent;
        c->sent = r->next;
        prompt_free(&r->prompt);
        free(r);
    }
    if (c->ctx) zmq_ctx_term(c->ctx);
    if (c->pipe_r >= 0) close(c->pipe_r);
    if (c->pipe_w >= 0 && c->pipe_w != c->pipe_r) close(c->pipe_w);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    free(c->address);
    free(c->name);
    free(c);
}

ss_status ss_client_create(const ss_client_config *cfg, ss_client **out) {
    ss_client *c;
    pthread_condattr_t attr;
    int fds[2];
    double deadline;
    ss_status st = SS_OK;
    if (out) *out = NULL;
    if (!cfg || !out || cfg->size < offsetof(ss_client_config, flags) || !cfg->address || !cfg->address[0])
        return fail(SS_INVALID_ARGUMENT, "argument", "ss_client_create needs a config with size and address");
    if (strlen(cfg->address) > 1000 || (cfg->name && strlen(cfg->name) > 128))
        return fail(SS_INVALID_ARGUMENT, "argument", "address or name too long");
    c = calloc(1, sizeof *c);
    if (!c) return fail(SS_OUT_OF_MEMORY, "memory", "out of memory");
    c->pipe_r = c->pipe_w = -1;
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &attr);
    pthread_condattr_destroy(&attr);
    c->address = dup_str(cfg->address);
    c->name = dup_str(cfg->name ? cfg->name : "libstreamstyle");
    c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : 10000;
    c->anticipate = !(cfg->size >= sizeof *cfg && (cfg->flags & SS_CLIENT_NO_ANTICIPATION));
    c->doorbell = !(cfg->size >= sizeof *cfg && (cfg->flags & SS_CLIENT_NO_DOORBELL));
    c->heartbeat_ms = SS_DEFAULT_HEARTBEAT_MS;
    c->reap_after_ms = SS_DEFAULT_REAP_AFTER_MS;
    if (!c->address || !c->name) {
        client_free(c);
        return fail(SS_OUT_OF_MEMORY, "memory", "out of memory");
    }
#ifdef __linux__
    fds[0] = fds[1] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fds[0] < 0) {
        client_free(c);
        return fail(SS_SYSTEM_FAILED, "system", "eventfd failed");
    }
#else
    if (pipe(fds) != 0) {
        client_free(c);
        return fail(SS_SYSTEM_FAILED, "system", "pipe failed");
    }
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
#endif
    c->pipe_r = fds[0];
    c->pipe_w = fds[1];
    c->ctx = zmq_ctx_new();
    if (!c->ctx) {
        client_free(c);
        return fail(SS_SYSTEM_FAILED, "system", "zmq_ctx_new failed");
    }
    c->state = DOWN;
    c->retry_at = 0;
    if (pthread_create(&c->io, NULL, io_main, c) != 0) {
        client_free(c);
        return fail(SS_SYSTEM_FAILED, "system", "cannot start the I/O thread");
    }
    c->io_started = 1;
    deadline = now_s() + c->timeout_ms / 1000.0;
    pthread_mutex_lock(&c->lock);
    while (!c->ever_up && !c->hello_code[0] && now_s() < deadline) wait_until(c, deadline);
    if (!c->ever_up) {
        if (c->hello_code[0]) {
            ss_set_error(c->hello_code, "%s", c->hello_message);
            st = SS_REFUSED;
        } else {
            st = fail(SS_UNAVAILABLE, "unavailable", "no welcome from the service within the timeout");
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (st != SS_OK) {
        client_free(c);
        return st;
    }
    *out = c;
    return SS_OK;
}

ss_status ss_client_destroy(ss_client *c) {
    if (!c) return fail(SS_INVALID_ARGUMENT, "argument", "NULL client");
    for (;;) {
        ss_session *s;
        pthread_mutex_lock(&c->lock);
        s = c->sessions;
        pthread_mutex_unlock(&c->lock);
        if (!s) break;
        ss_session_close(s);
    }
    client_free(c);
    return SS_OK;
}

ss_status ss_client_get_info(ss_client *c, ss_client_info *out) {
    if (!c || !out || out->size < offsetof(ss_client_info, unwoken))
        return fail(SS_INVALID_ARGUMENT, "argument", "NULL or short info");
    pthread_mutex_lock(&c->lock);
    out->connected = c->connected;
    out->reconnects = c->reconnects;
    out->heartbeat_ms = c->heartbeat_ms;
    out->reap_after_ms = c->reap_after_ms;
    out->max_sessions = c->max_sessions;
    snprintf(out->service, sizeof out->service, "%s", c->service);
    out->spun_us = c->spun_ns / 1000u;
    out->period_ms = c->period.dev < c->period.mid / 4 ? c->period.mid / 1e6 : 0;
    out->submits = __atomic_load_n(&c->submits, __ATOMIC_RELAXED);
    out->wakes = __atomic_load_n(&c->wakes, __ATOMIC_RELAXED);
    if (out->size >= sizeof *out) out->unwoken = __atomic_load_n(&c->unwoken, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->lock);
    return SS_OK;
}

/* ---- sessions -------------------------------------------------------------------------------- */

static void session_free(ss_session *s) {
    if (s->ring) s->ring->ops->close(s->ring);
    ss_bell_destroy(s->bell);
    msgpack_sbuffer_destroy(&s->bell_buf);
    for (uint32_t i = 0; i < s->channel_count && s->channels; i++) {
        free((char *)s->channels[i].name);
        free((char *)s->channels[i].format);
        free((char *)s->channels[i].encoding);
    }
    free(s->channels);
    prompt_free(&s->prompt);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void unlink_session(ss_client *c, ss_session *s) {
    pthread_mutex_lock(&c->lock);
    for (ss_session **p = &c->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    pthread_mutex_unlock(&c->lock);
}

static int one_of(const char *s, const char *const *choices, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(s, choices[i]) == 0) return 1;
    return 0;
}

static ss_status check_params(const ss_params *p) {
    if (p->steps < 0 || p->steps > 4 || p->strength > 1.0f || p->reset < 0 || p->reset > 1 || p->deadline_ms < 0 ||
        p->deadline_ms > 60000.0 || (p->strength != p->strength) || (p->deadline_ms != p->deadline_ms))
        return fail(SS_INVALID_ARGUMENT, "argument", "params out of range (steps 1..4, strength 0..1, reset 0/1, "
                                                     "deadline_ms 0.1..60000)");
    return SS_OK;
}

ss_status ss_session_open(ss_client *c, const ss_session_config *cfg, ss_session **out) {
    static const char *const backends[] = {SS_BACKENDS_LIST};
    static const char *const formats[] = {SS_OUTPUT_FORMATS_LIST};
    const char *backend, *fmt;
    uint32_t slots;
    uint64_t out_bytes;
    ss_session *s;
    ss_request *r;
    ss_status st;
    if (out) *out = NULL;
    if (!c || !cfg || !out || cfg->size < sizeof *cfg)
        return fail(SS_INVALID_ARGUMENT, "argument", "ss_session_open needs a client, a config with size, and out");
    backend = cfg->backend ? cfg->backend : SS_BACKEND_SHM;
    fmt = cfg->output_format ? cfg->output_format : SS_FORMAT_RGBA8;
    slots = cfg->slots ? cfg->slots : SS_MIN_SLOTS;
    if (cfg->width == 0 || cfg->height == 0 || cfg->width > 65535 || cfg->height > 65535)
        return fail(SS_INVALID_ARGUMENT, "argument", "width and height must be positive");
    if (!cfg->channels || cfg->channel_count == 0 || cfg->channel_count > 64)
        return fail(SS_INVALID_ARGUMENT, "argument", "a layout needs 1 to 64 channels");
    for (uint32_t i = 0; i < cfg->channel_count; i++)
        if (!cfg->channels[i].name || !cfg->channels[i].format)
            return fail(SS_INVALID_ARGUMENT, "argument", "every channel needs a name and a format");
    if (cfg->input_slot_bytes == 0 || cfg->input_slot_bytes > ((uint64_t)1 << 40))
        return fail(SS_INVALID_ARGUMENT, "argument", "input_slot_bytes must be positive");
    if (!one_of(backend, backends, SS_BACKENDS_COUNT))
        return fail(SS_INVALID_ARGUMENT, "argument", "backend must be shm or cuda-ipc");
    if (!one_of(fmt, formats, SS_OUTPUT_FORMATS_COUNT))
        return fail(SS_INVALID_ARGUMENT, "argument", "output_format must be rgba8 or rgba16f");
    if (slots < SS_MIN_SLOTS || slots > SS_MAX_SLOTS)
        return fail(SS_INVALID_ARGUMENT, "argument", "slots must be in SS_MIN_SLOTS..SS_MAX_SLOTS");
    if ((st = check_params(&cfg->params)) != SS_OK) return st;
    out_bytes = (uint64_t)cfg->width * cfg->height *
                (strcmp(fmt, SS_FORMAT_RGBA16F) == 0 ? SS_OUTPUT_BYTES_PER_PIXEL_RGBA16F : SS_OUTPUT_BYTES_PER_PIXEL_RGBA8);

    s = calloc(1, sizeof *s);
    if (!s) return fail(SS_OUT_OF_MEMORY, "memory", "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    s->client = c;
    s->width = cfg->width;
    s->height = cfg->height;
    s->seed = cfg->seed < 0 ? 0 : (uint64_t)cfg->seed;
    s->params = cfg->params;
    s->channels = calloc(cfg->channel_count, sizeof *s->channels);
    if (!s->channels) {
        session_free(s);
        return fail(SS_OUT_OF_MEMORY, "memory", "out of memory");
    }
    s->channel_count = cfg->channel_count;
    for (uint32_t i = 0; i < cfg->channel_count; i++) {
        ss_channel *d = &s->channels[i];
        *d = cfg->channels[i];
        d->name = dup_str(cfg->channels[i].name);
        d->format = dup_str(cfg->channels[i].format);
        d->encoding = dup_str(cfg->channels[i].encoding);
        if (!d->name || !d->format || (cfg->channels[i].encoding && !d->encoding)) {
            session_free(s);
            return fail(SS_OUT_OF_MEMORY, "memory", "out of memory");
        }
    }
    if (cfg->prompt && !(s->prompt.texts[0] = dup_str(cfg->prompt))) {
        session_free(s);
        return fail(SS_OUT_OF_MEMORY, "memory", "out of memory");
    }
    st = strcmp(backend, SS_BACKEND_SHM) == 0
             ? ss_ring_create_shm(slots, cfg->input_slot_bytes, out_bytes, &s->ring)
             : ss_ring_create_cuda(slots, cfg->input_slot_bytes, out_bytes, cfg->device, &s->ring);
    if (st != SS_OK) {
        session_free(s);
        return st;
    }
    s->ring->desc.output_format = strcmp(fmt, SS_FORMAT_RGBA16F) == 0 ? SS_FORMAT_RGBA16F : SS_FORMAT_RGBA8;
    if (c->doorbell) s->bell = ss_bell_create(); /* none (NULL) is only slower: ZeroMQ carries everything */
    msgpack_sbuffer_init(&s->bell_buf);
    if (s->bell && (s->bell_buf.data = malloc(SS_BELL_RECORD_BYTES)) != NULL) /* no allocation in ss_submit */
        s->bell_buf.alloc = SS_BELL_RECORD_BYTES;
    r = new_request(REQ_OPEN, s);
    if (!r) {
        session_free(s);
        return fail(SS_OUT_OF_MEMORY, "memory", "out of memory");
    }
    pthread_mutex_lock(&c->lock);
    s->next = c->sessions;
    c->sessions = s;
    pthread_mutex_unlock(&c->lock);
    st = call(c, r, NULL);
    if (st != SS_OK) {
        unlink_session(c, s);
        session_free(s);
        return st;
    }
    *out = s;
    return SS_OK;
}

ss_status ss_session_close(ss_session *s) {
    ss_client *c;
    int live;
    if (!s) return fail(SS_INVALID_ARGUMENT, "argument", "NULL session");
    c = s->client;
    lock_waiting(s);
    live = s->live;
    pthread_mutex_unlock(&s->lock);
    if (live) {
        ss_request *r = new_request(REQ_CLOSE, s);
        if (r) call(c, r, NULL); /* a service that does not answer reaps it anyway */
    }
    unlink_session(c, s);
    session_free(s);
    return SS_OK;
}

static ss_status set_prompt(ss_session *s, const ss_prompt *p, uint32_t blend_frames) {
    ss_request *r;
    ss_status st;
    if (blend_frames > 600) return fail(SS_INVALID_ARGUMENT, "argument", "blend_frames must be 0..600");
    r = new_request(REQ_PROMPT, s);
    if (!r || prompt_copy(&r->prompt, p) != 0) {
        free(r);
        return fail(SS_OUT_OF_MEMORY, "memory", "out of memory");
    }
    r->blend_frames = blend_frames;
    st = call(s->client, r, NULL);
    if (st == SS_OK) { /* what a reopen restores */
        ss_prompt copy;
        if (prompt_copy(&copy, p) == 0) {
            pthread_mutex_lock(&s->client->lock);
            prompt_free(&s->prompt);
            s->prompt = copy;
            pthread_mutex_unlock(&s->client->lock);
        }
    }
    return st;
}

ss_status ss_set_prompt(ss_session *s, const char *prompt, uint32_t blend_frames) {
    ss_prompt p;
    if (!s || !prompt) return fail(SS_INVALID_ARGUMENT, "argument", "NULL session or prompt");
    memset(&p, 0, sizeof p);
    p.texts[0] = (char *)prompt;
    return set_prompt(s, &p, blend_frames);
}

ss_status ss_set_prompt_blend(ss_session *s, const char *const *texts, const float *weights, uint32_t count,
                              uint32_t blend_frames) {
    ss_prompt p;
    if (!s || !texts || !weights || count == 0 || count > 4)
        return fail(SS_INVALID_ARGUMENT, "argument", "a blend has 1 to 4 parts");
    memset(&p, 0, sizeof p);
    p.count = count;
    for (uint32_t i = 0; i < count; i++) {
        if (!texts[i] || !(weights[i] > 0.0f) || weights[i] > 1e30f)
            return fail(SS_INVALID_ARGUMENT, "argument", "every part needs a text and a finite weight > 0");
        p.texts[i] = (char *)texts[i];
        p.weights[i] = weights[i];
    }
    return set_prompt(s, &p, blend_frames);
}

ss_status ss_set_params(ss_session *s, const ss_params *params) {
    ss_request *r;
    ss_status st;
    if (!s || !params) return fail(SS_INVALID_ARGUMENT, "argument", "NULL session or params");
    if ((st = check_params(params)) != SS_OK) return st;
    r = new_request(REQ_PARAMS, s);
    if (!r) return fail(SS_OUT_OF_MEMORY, "memory", "out of memory");
    r->params = *params;
    st = call(s->client, r, NULL);
    if (st == SS_OK) {
        pthread_mutex_lock(&s->client->lock);
        if (params->steps > 0) s->params.steps = params->steps;
        if (params->strength >= 0) s->params.strength = params->strength;
        if (params->seed >= 0) s->params.seed = params->seed;
        if (params->deadline_ms > 0) s->params.deadline_ms = params->deadline_ms;
        pthread_mutex_unlock(&s->client->lock);
    }
    return st;
}

ss_status ss_stats(ss_session *s, ss_session_stats *out) {
    ss_request *r;
    ss_reply reply;
    ss_status st;
    if (!s || !out || out->size < sizeof *out) return fail(SS_INVALID_ARGUMENT, "argument", "NULL or short stats");
    r = new_request(REQ_STATS, s);
    if (!r) return fail(SS_OUT_OF_MEMORY, "memory", "out of memory");
    st = call(s->client, r, &reply);
    if (st != SS_OK) return st;
    if (!reply.has_stats) return fail(SS_REFUSED, SS_ERR_INTERNAL, "the stats reply listed no session");
    *out = reply.stats;
    return SS_OK;
}

ss_status ss_session_get_info(ss_session *s, ss_session_info *out) {
    if (!s || !out || out->size < offsetof(ss_session_info, doorbell))
        return fail(SS_INVALID_ARGUMENT, "argument", "NULL or short info");
    lock_waiting(s);
    out->session_id = s->id;
    out->live = s->live;
    out->events_lost = s->events_lost;
    if (out->size >= offsetof(ss_session_info, doorbell_answers) + sizeof out->doorbell_answers) {
        out->doorbell = s->bell_on;
        out->doorbell_answers = s->bell_answers;
    }
    if (out->size >= sizeof *out) out->doorbell_polled = s->bell_polled;
    pthread_mutex_unlock(&s->lock);
    out->slots = s->ring->desc.slots;
    out->width = s->width;
    out->height = s->height;
    out->input_slot_bytes = s->ring->desc.input_bytes;
    out->output_slot_bytes = s->ring->desc.output_bytes;
    return SS_OK;
}

/* ---- the frame path -------------------------------------------------------------------------- */

ss_status ss_acquire(ss_session *s, void *stream, ss_slot *out) {
    uint32_t slot;
    uint64_t prev;
    int answered;
    if (!s || !out) return fail(SS_INVALID_ARGUMENT, "argument", "NULL session or slot");
    if (!frame_lock(s)) return SS_BUSY;
    if (!s->live) {
        pthread_mutex_unlock(&s->lock);
        return SS_BUSY;
    }
    slot = s->next_slot;
    prev = s->slot_seq[slot];
    answered = prev != 0 && s->slot_answered[slot] >= prev;
    if (prev != 0 && !answered && !s->ring->ops->is_released(s->ring, slot, prev)) {
        pthread_mutex_unlock(&s->lock);
        return SS_BUSY;
    }
    s->next_slot = (slot + 1) % s->ring->desc.slots;
    s->acquired[slot] = 1;
    pthread_mutex_unlock(&s->lock);
    /* the frame's ring in ss_submit writes lines the spinning service last read: fetched now, while
     * the engine renders, instead of in the submit (a frame message with view, proj and params is
     * ~400 bytes) */
    if (__atomic_load_n(&s->bell_on, __ATOMIC_ACQUIRE)) ss_bell_prefetch(s->bell, SS_BELL_TO_SERVICE, 448);
    if (answered) { /* cuda-ipc: the engine's later writes queue behind the service's reads */
        ss_status st = s->ring->ops->wait_released(s->ring, slot, stream);
        if (st != SS_OK) return st;
    }
    out->index = slot;
    out->input = s->ring->inputs[slot];
    out->input_bytes = s->ring->desc.input_bytes;
    return SS_OK;
}

ss_status ss_submit(ss_session *s, uint32_t slot, const ss_frame_info *info, void *stream, uint64_t *seq_out) {
    ss_status st;
    pending_frame *f;
    uint64_t seq;
    if (!s) return fail(SS_INVALID_ARGUMENT, "argument", "NULL session");
    if (slot >= s->ring->desc.slots) return fail(SS_INVALID_ARGUMENT, "argument", "slot outside the ring");
    if (info && info->size < sizeof *info) return fail(SS_INVALID_ARGUMENT, "argument", "short frame info");
    if (info && (info->fields & SS_FRAME_PARAMS) && (st = check_params(&info->params)) != SS_OK) return st;
    if (info && (info->fields & SS_FRAME_DT) && !(info->dt >= 0.0f && info->dt <= 10.0f))
        return fail(SS_INVALID_ARGUMENT, "argument", "dt must be 0..10 seconds");
    /* `acquired` and `seq` belong to the render thread (the I/O thread never writes them) */
    if (!s->acquired[slot]) return fail(SS_WRONG_STATE, "state", "submit a slot acquired with ss_acquire");
    if (!__atomic_load_n(&s->live, __ATOMIC_ACQUIRE)) return SS_BUSY; /* reconnecting: show the raw frame */
    seq = s->seq + 1;
    /* Outside the lock: a CUDA event record can take microseconds, and nothing else touches an
     * acquired slot's ready signal. If the frame is not queued below, the signal shows a number no
     * frame carries; the next submit of this slot marks it again with the same number. */
    if ((st = s->ring->ops->mark_ready(s->ring, slot, seq, stream)) != SS_OK) return st;
    if (!frame_lock(s)) return SS_BUSY; /* the slot stays acquired: submit it again or acquire anew */
    if (!s->live || s->fr_count == FRAME_CAP) {
        pthread_mutex_unlock(&s->lock);
        return SS_BUSY; /* reconnecting, or the I/O thread is behind: show the raw frame */
    }
    s->seq = seq;
    s->slot_seq[slot] = seq;
    s->acquired[slot] = 0;
    f = &s->frames[(s->fr_head + s->fr_count) % FRAME_CAP];
    f->seq = seq;
    f->slot = slot;
    f->has_info = info != NULL;
    if (info) f->info = *info;
    f->rung_ns = 0;
    /* Rung here, on the render thread: the frame reaches a spinning service without waiting for the
     * I/O thread to be scheduled (on the H200 hosts that wait was the 1.4-3.5 ms tail, benchmarks/
     * NOTES.md v0.13); the I/O thread sends the ZeroMQ copy, which wakes a sleeping service. */
    int watched = 0;
    if (__atomic_load_n(&s->bell_on, __ATOMIC_ACQUIRE)) {
        msgpack_sbuffer_clear(&s->bell_buf);
        ss_enc_frame(&s->bell_buf, s->id, seq, slot, info);
        if (ss_bell_push(s->bell, SS_BELL_TO_SERVICE, s->bell_buf.data, s->bell_buf.size)) {
            f->rung_ns = now_ns();
            __atomic_store_n(&s->io_sent_seq[slot], seq, __ATOMIC_RELAXED);
            __atomic_store_n(&s->io_sent_ns[slot], f->rung_ns, __ATOMIC_RELAXED);
            /* the service promised to look at the lane after this (interop/doorbell.py WATCH_OFFSET):
             * the ZeroMQ copy need not wake the I/O thread, which sends it when it next runs. Read
             * only when the I/O thread sleeps (its line is the service's: a read misses) */
            watched = __atomic_load_n(&s->client->sleeping, __ATOMIC_SEQ_CST) &&
                      ss_bell_watched_until(s->bell, SS_BELL_TO_SERVICE) >= f->rung_ns + SS_BELL_WATCH_MARGIN_US * 1000ull;
        }
    }
    __atomic_store_n(&s->fr_count, s->fr_count + 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&s->lock);
    __atomic_store_n(&s->client->last_submit_ns, now_ns(), __ATOMIC_RELAXED); /* the rhythm (vDSO clock) */
    __atomic_add_fetch(&s->client->submits, 1, __ATOMIC_RELAXED);
    if (watched) __atomic_add_fetch(&s->client->unwoken, 1, __ATOMIC_RELAXED);
    else if (wake(s->client)) __atomic_add_fetch(&s->client->wakes, 1, __ATOMIC_RELAXED);
    if (seq_out) *seq_out = seq;
    return SS_OK;
}

ss_status ss_poll(ss_session *s, ss_event *out) {
    if (!s || !out) return fail(SS_INVALID_ARGUMENT, "argument", "NULL session or event");
    if (__atomic_load_n(&s->bell_on, __ATOMIC_ACQUIRE) && __atomic_load_n(&s->ev_count, __ATOMIC_RELAXED) == 0 &&
        ss_bell_pending(s->bell, SS_BELL_TO_ENGINE))
        poll_bell(s);
    if (!frame_lock(s)) return SS_NO_EVENT;
    if (s->ev_count == 0) {
        pthread_mutex_unlock(&s->lock);
        return SS_NO_EVENT;
    }
    *out = s->events[s->ev_head];
    s->ev_head = (s->ev_head + 1) % EVENT_CAP;
    s->ev_count--;
    pthread_mutex_unlock(&s->lock);
    return SS_OK;
}

ss_status ss_output(ss_session *s, uint32_t slot, void *stream, const void **ptr, uint64_t *bytes) {
    ss_status st;
    if (!s || !ptr) return fail(SS_INVALID_ARGUMENT, "argument", "NULL session or pointer");
    if (slot >= s->ring->desc.slots) return fail(SS_INVALID_ARGUMENT, "argument", "slot outside the ring");
    st = s->ring->ops->wait_done(s->ring, slot, stream);
    if (st != SS_OK) return st;
    *ptr = s->ring->outputs[slot];
    if (bytes) *bytes = s->ring->desc.output_bytes;
    return SS_OK;
}
