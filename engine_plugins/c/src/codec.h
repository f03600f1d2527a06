/* codec.h: the protocol's messages to and from msgpack (docs/protocol.md), with no sockets.
 *
 * Encoders append one message (a msgpack map) to an sbuffer; they take everything the message needs
 * as arguments, so the same bytes come out for the same inputs. The decoder turns one service
 * message into a flat ss_reply, copying every string it keeps: nothing in the reply points into the
 * buffer it was decoded from, so the ZeroMQ message can be freed straight after. */
#ifndef SS_CODEC_H
#define SS_CODEC_H

#include <msgpack.h>

#include "streamstyle.h"

/* What the ring contributes to "open": one region per slot side and the sync description. */
typedef struct ss_ring_desc {
    const char *backend;
    uint32_t slots;
    const char *output_format;
    int32_t device;
    /* shm: the segment's name (one segment holds everything); cuda-ipc: NULL */
    const char *shm_name;
    uint64_t sync_offset;
    /* cuda-ipc: the allocation's 64-byte handle and 3 x slots event handles (ready, released, done) */
    const unsigned char *mem_handle;
    const unsigned char *event_handles[3];
    uint64_t input_offsets[SS_MAX_SLOTS], output_offsets[SS_MAX_SLOTS];
    uint64_t input_bytes, output_bytes;
} ss_ring_desc;

/* A prompt: `count` == 0 means the single string texts[0]; otherwise a blend of `count` parts. */
typedef struct ss_prompt {
    uint32_t count;
    char *texts[4];
    float weights[4];
} ss_prompt;

int ss_params_any(const ss_params *p);

void ss_enc_hello(msgpack_sbuffer *buf, uint64_t req, const char *client_name);
void ss_enc_open(msgpack_sbuffer *buf, uint64_t req, uint32_t width, uint32_t height, const ss_channel *channels,
                 uint32_t channel_count, const ss_ring_desc *ring, const ss_prompt *prompt, const ss_params *params,
                 uint64_t seed, const char *doorbell /* a doorbell segment's name, or NULL */);
void ss_enc_frame(msgpack_sbuffer *buf, uint64_t session, uint64_t seq, uint32_t slot, const ss_frame_info *info);
void ss_enc_prompt(msgpack_sbuffer *buf, uint64_t req, uint64_t session, const ss_prompt *prompt,
                   uint32_t blend_frames);
void ss_enc_params(msgpack_sbuffer *buf, uint64_t req, uint64_t session, const ss_params *params);
void ss_enc_stats(msgpack_sbuffer *buf, uint64_t req, uint64_t session /* 0: the whole service */);
void ss_enc_heartbeat(msgpack_sbuffer *buf, double time_s);
void ss_enc_close(msgpack_sbuffer *buf, uint64_t req, uint64_t session);

typedef enum ss_reply_type {
    SS_REPLY_UNKNOWN = 0, SS_REPLY_WELCOME, SS_REPLY_OPENED, SS_REPLY_OK, SS_REPLY_STATS, SS_REPLY_CLOSED,
    SS_REPLY_DONE, SS_REPLY_LATE, SS_REPLY_ERROR, SS_REPLY_HEARTBEAT, SS_REPLY_BYE
} ss_reply_type;

typedef struct ss_reply {
    ss_reply_type type;
    char type_name[24];
    int has_req, has_session, has_seq;
    uint64_t req, session, seq;
    int64_t slot;               /* -1 when absent */
    int late;
    char code[32];              /* error: the code; late: the reason */
    char message[224];
    double queue_ms, model_ms, write_ms, total_ms;
    /* welcome */
    int64_t protocol;
    uint32_t heartbeat_ms, reap_after_ms, max_sessions;
    char service[64];
    /* opened */
    uint32_t slots;
    uint64_t input_bytes, output_bytes, cache_pages;
    int doorbell;               /* the service attached the session's doorbell */
    /* stats: the first session listed */
    int has_stats;
    ss_session_stats stats;
} ss_reply;

/* 0 and *out filled, or -1: not msgpack, not a map, no string "type", trailing bytes, too large. */
int ss_decode_reply(const char *data, size_t size, ss_reply *out);
const char *ss_reply_type_name(ss_reply_type t);

#endif
