/* streamstyle.h: libstreamstyle, the engine side of the StreamStyle protocol (docs/protocol.md) in C.
 *
 * One ss_client per process owns an I/O thread and the ZeroMQ socket to the service: it says hello,
 * sends heartbeats even while the game is loading, and when the service goes away it reconnects and
 * reopens every session on its own ring. Each ss_session owns its ring of frame slots (backend "shm"
 * or "cuda-ipc"). docs/engines.md is the integration guide.
 *
 * Rules of the ABI:
 *  - every call returns an ss_status; nothing throws, longjmps, aborts or prints;
 *  - handles are opaque; structs passed in start with `size` (set it to sizeof) so they can grow;
 *  - strings are UTF-8, NUL-terminated, copied by the library before the call returns;
 *  - frame-path calls (ss_acquire, ss_submit, ss_poll, ss_output) never block on the service, the
 *    network or the I/O thread and never synchronise the GPU with the host: they try the session's
 *    lock and, if the I/O thread holds it, answer SS_BUSY / SS_NO_EVENT instead of waiting. Call
 *    them for one session from one thread at a time (the render thread);
 *  - control calls (ss_client_create, ss_session_open/close, ss_set_prompt, ss_set_params,
 *    ss_stats) wait for the service's answer (up to the client's timeout): not for the render thread.
 */
#ifndef STREAMSTYLE_H
#define STREAMSTYLE_H

#include <stddef.h>
#include <stdint.h>

#include "streamstyle_contract.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define SS_API __declspec(dllexport)
#elif defined(__GNUC__)
#define SS_API __attribute__((visibility("default")))
#else
#define SS_API
#endif

#define SS_ABI_VERSION 1

typedef enum ss_status {
    SS_OK = 0,
    SS_BUSY = 1,              /* no free slot, or the service is reconnecting: show the raw frame */
    SS_NO_EVENT = 2,          /* ss_poll: nothing has arrived */
    SS_INVALID_ARGUMENT = -1, /* a NULL, a size out of range, an unknown backend or format */
    SS_WRONG_STATE = -2,      /* e.g. submitting a slot that was not acquired, or a closed session */
    SS_UNAVAILABLE = -3,      /* the service did not answer within the timeout, or is not connected */
    SS_REFUSED = -4,          /* the service answered with an error: ss_last_error() has its code */
    SS_NO_CUDA = -5,          /* backend "cuda-ipc" without a loadable CUDA driver */
    SS_CUDA_FAILED = -6,      /* a CUDA call failed (ss_last_error() says which) */
    SS_SYSTEM_FAILED = -7,    /* shared memory, a thread or a socket could not be made */
    SS_OUT_OF_MEMORY = -8
} ss_status;

typedef struct ss_client ss_client;
typedef struct ss_session ss_session;

/* The last failure of a call on this thread: the protocol's error code (SS_ERR_*) when the service
 * refused, else a short word ("argument", "cuda", ...), and a message. Valid until the next call. */
SS_API const char *ss_last_error_code(void);
SS_API const char *ss_last_error_message(void);
SS_API const char *ss_status_name(ss_status status);
SS_API int ss_abi_version(void);

/* ---- client ---------------------------------------------------------------------------------- */

/* The I/O thread learns the engine's frame rhythm (the interval between ss_submit calls, the time
 * from a frame's send to its answer) and stays awake, polling without sleeping, from shortly before
 * each expected submit or answer until it comes (or a millisecond and a half after): then ss_submit
 * makes no system call at all and neither hand-off waits for a thread to wake. It costs the CPU time
 * of those windows (ss_client_info.spun_us says how much). This flag turns it off: every submit then
 * wakes the I/O thread with one write to an eventfd. */
#define SS_CLIENT_NO_ANTICIPATION 1u
/* Each session gets a doorbell (docs/protocol.md, "The doorbell"): a small shared-memory segment
 * through which a copy of each frame message reaches the service, and each answer comes back,
 * without the thread wake-ups of a ZeroMQ hop, for whichever side is awake and looking. ZeroMQ still
 * carries every message, so nothing depends on it. This flag leaves it out. */
#define SS_CLIENT_NO_DOORBELL 2u

typedef struct ss_client_config {
    uint32_t size;          /* sizeof(ss_client_config) (a config without `flags` is taken as flags 0) */
    const char *address;    /* e.g. "ipc:///run/user/1000/streamstyle.sock" or "tcp://127.0.0.1:5599" */
    const char *name;       /* sent in hello; NULL: "libstreamstyle" */
    uint32_t timeout_ms;    /* how long control calls wait for an answer; 0: 10000 */
    uint32_t flags;         /* SS_CLIENT_* */
} ss_client_config;

/* Connect and say hello; fails with SS_UNAVAILABLE if no welcome comes within the timeout. */
SS_API ss_status ss_client_create(const ss_client_config *config, ss_client **out);
/* Close every session still open (asking the service, briefly), stop the I/O thread, free. */
SS_API ss_status ss_client_destroy(ss_client *client);

typedef struct ss_client_info {
    uint32_t size;
    int connected;          /* 1 while a welcomed connection is up */
    uint64_t reconnects;    /* completed reconnections (every session reopened) */
    uint32_t heartbeat_ms, reap_after_ms, max_sessions;
    char service[64];       /* the welcome's service name and version */
    uint64_t spun_us;       /* time the I/O thread spent awake anticipating submits and answers */
    double period_ms;       /* the submit interval it learned (0: none steady) */
    uint64_t submits, wakes;/* ss_submit calls, and those that had to wake the I/O thread (a system call) */
    uint64_t unwoken;       /* submits that left it asleep because the service watched the doorbell they
                             * rang (docs/protocol.md, The doorbell); filled when `size` covers it */
} ss_client_info;
SS_API ss_status ss_client_get_info(ss_client *client, ss_client_info *out);

/* ---- sessions -------------------------------------------------------------------------------- */

/* One G-buffer channel of the session's layout (docs/gbuffer-layout.md). */
typedef struct ss_channel {
    const char *name;       /* color, depth, normals, albedo, roughness, metallic, motion, ids */
    const char *format;     /* r8_unorm ... rgba32f, r32_uint */
    const char *encoding;   /* NULL or "": the channel's default */
    uint64_t offset;        /* byte offset of its plane in the input slot */
    uint32_t row_pitch;     /* 0: tightly packed */
    uint32_t first;         /* first component it reads (channels may share a plane) */
    float depth_near, depth_far; /* 0, 0: the defaults (0.1, 1000) */
    float exposure;         /* 0: 1.0 */
} ss_channel;

/* Session parameters; a field left at its "unset" value is not sent. */
typedef struct ss_params {
    int32_t steps;          /* 1..4; 0: unset */
    float strength;         /* 0..1; < 0: unset */
    int32_t reset;          /* 1: camera cut on this frame; 0: unset */
    int64_t seed;           /* >= 0; < 0: unset */
    double deadline_ms;     /* 0.1..60000; 0: unset */
} ss_params;
SS_API void ss_params_init(ss_params *params); /* every field unset */

typedef struct ss_session_config {
    uint32_t size;              /* sizeof(ss_session_config) */
    uint32_t width, height;
    const ss_channel *channels;
    uint32_t channel_count;
    uint64_t input_slot_bytes;  /* bytes of one input slot: at least where the last plane ends */
    const char *backend;        /* SS_BACKEND_SHM or SS_BACKEND_CUDA_IPC */
    uint32_t slots;             /* SS_MIN_SLOTS..SS_MAX_SLOTS; 0: 3 */
    const char *output_format;  /* SS_FORMAT_RGBA8 (NULL) or SS_FORMAT_RGBA16F */
    int32_t device;             /* CUDA device for cuda-ipc */
    const char *prompt;         /* NULL: the service's default */
    ss_params params;           /* the session's defaults (ss_params_init first) */
    int64_t seed;               /* < 0: 0 */
} ss_session_config;

/* Allocate the ring and open a session on it (waits for "opened"). A refusal is SS_REFUSED with the
 * protocol's code (bad_layout, bad_resolution, session_limit, ...); nothing is left allocated. */
SS_API ss_status ss_session_open(ss_client *client, const ss_session_config *config, ss_session **out);
/* Ask the service to close it, then free the ring. The handle is invalid afterwards. */
SS_API ss_status ss_session_close(ss_session *session);

/* Switch the prompt, at once or blended over `blend_frames` frames. Restored after a reconnect. */
SS_API ss_status ss_set_prompt(ss_session *session, const char *prompt, uint32_t blend_frames);
/* A blend of up to 4 weighted prompts (weights > 0). */
SS_API ss_status ss_set_prompt_blend(ss_session *session, const char *const *texts, const float *weights,
                                     uint32_t count, uint32_t blend_frames);
SS_API ss_status ss_set_params(ss_session *session, const ss_params *params);

typedef struct ss_session_stats {
    uint32_t size;
    uint64_t session_id, frames_in, done, late, dropped, cache_pages;
    double latency_p50_ms, latency_p99_ms, model_p50_ms; /* -1 until a frame is done */
} ss_session_stats;
SS_API ss_status ss_stats(ss_session *session, ss_session_stats *out);

typedef struct ss_session_info {
    uint32_t size;
    uint64_t session_id;        /* the service's id (changes when a reconnect reopens it) */
    uint32_t slots, width, height;
    uint64_t input_slot_bytes, output_slot_bytes;
    int live;                   /* 1 while open on a connected service */
    uint64_t events_lost;       /* the oldest events dropped because ss_poll was not called (64 are kept) */
    /* set only when size covers them (a caller built before them still works): */
    int doorbell;               /* 1 while the service uses the session's doorbell */
    uint64_t doorbell_answers;  /* answers that came through the doorbell before their ZeroMQ copy */
    uint64_t doorbell_polled;   /* of those, the ones ss_poll took on its caller's thread */
} ss_session_info;
SS_API ss_status ss_session_get_info(ss_session *session, ss_session_info *out);

/* ---- the frame path (render thread; never blocks) -------------------------------------------- */

typedef struct ss_slot {
    uint32_t index;
    void *input;                /* shm: host pointer; cuda-ipc: device pointer (CUdeviceptr) */
    uint64_t input_bytes;
} ss_slot;

/* The next input slot to write, or SS_BUSY when the service still reads it or is reconnecting
 * (show the raw frame this time). cuda-ipc: `stream` (a CUstream / cudaStream_t, NULL = default)
 * is made to wait on the slot's `released` event, so the engine's writes cannot overtake the
 * service's reads; shm: `stream` is ignored. */
SS_API ss_status ss_acquire(ss_session *session, void *stream, ss_slot *out);

enum {
    SS_FRAME_VIEW = 1, SS_FRAME_PROJ = 2, SS_FRAME_JITTER = 4, SS_FRAME_DT = 8, SS_FRAME_PARAMS = 16
};
typedef struct ss_frame_info {
    uint32_t size;
    uint32_t fields;            /* SS_FRAME_* bits: which of the below are sent */
    float view[16], proj[16];   /* row-major */
    float jitter[2];            /* pixels */
    float dt;                   /* seconds */
    ss_params params;           /* this frame only */
} ss_frame_info;

/* Signal the acquired slot ready (shm: its counter; cuda-ipc: the ready event recorded on
 * `stream`) and queue the frame for the I/O thread (waking it: one write to a pipe when it sleeps).
 * `info` may be NULL. `seq_out` may be NULL. SS_BUSY: nothing was sent (reconnecting, or the queue
 * of 16 frames is full); the slot stays acquired. */
SS_API ss_status ss_submit(ss_session *session, uint32_t slot, const ss_frame_info *info, void *stream,
                           uint64_t *seq_out);

typedef enum ss_event_kind {
    SS_EVENT_DONE = 1,          /* output slot `slot` holds frame `seq` (`late` if past its deadline) */
    SS_EVENT_LATE = 2,          /* frame `seq` will not be stylized; `code`: an SS_LATE_* reason */
    SS_EVENT_ERROR = 3,         /* the service refused frame `seq`, or (seq 0) a request; `code`: SS_ERR_* */
    SS_EVENT_SERVICE_LOST = 4,  /* the service went away; the client keeps reconnecting */
    SS_EVENT_REOPENED = 5       /* the service is back and this session was reopened on its ring */
} ss_event_kind;

typedef struct ss_event {
    ss_event_kind kind;
    uint64_t seq;
    int32_t slot;               /* -1 when not about a frame */
    int32_t late;
    char code[32];
    char message[224];
    double queue_ms, model_ms, write_ms, total_ms; /* SS_EVENT_DONE: the service's timings */
    /* About a frame: CLOCK_MONOTONIC nanoseconds at which the I/O thread sent it and received this
     * answer (0 when unknown): with the caller's own clock around ss_submit and ss_poll they split
     * a frame's round trip into the hand-offs on this side and the service's. */
    uint64_t sent_ns, received_ns;
} ss_event;

/* Take the oldest event of this session: SS_OK with *out filled, or SS_NO_EVENT. */
SS_API ss_status ss_poll(ss_session *session, ss_event *out);

/* Output slot `slot` after its SS_EVENT_DONE: its pointer (shm host / cuda-ipc device) and bytes.
 * cuda-ipc: `stream` is made to wait on the slot's `done` event. The slot keeps the frame until the
 * next frame submitted into the same slot index is stylized. */
SS_API ss_status ss_output(ss_session *session, uint32_t slot, void *stream, const void **ptr, uint64_t *bytes);

#ifdef __cplusplus
}
#endif
#endif /* STREAMSTYLE_H */
