/* codec.c: see codec.h. Field names and shapes follow interop/protocol.py, which validates them. */
#include "codec.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void str(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void key(msgpack_packer *pk, const char *k) { str(pk, k); }

static void bin64(msgpack_packer *pk, const unsigned char *b) {
    msgpack_pack_bin(pk, 64);
    msgpack_pack_bin_body(pk, b, 64);
}

static void floats(msgpack_packer *pk, const float *v, int n) {
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++) msgpack_pack_double(pk, (double)v[i]);
}

static void head(msgpack_packer *pk, const char *type, size_t fields) {
    msgpack_pack_map(pk, fields + 1);
    key(pk, "type");
    str(pk, type);
}

void ss_params_init(ss_params *p) {
    if (!p) return;
    p->steps = 0;
    p->strength = -1.0f;
    p->reset = 0;
    p->seed = -1;
    p->deadline_ms = 0.0;
}

int ss_params_any(const ss_params *p) {
    return p && (p->steps > 0 || p->strength >= 0 || p->reset > 0 || p->seed >= 0 || p->deadline_ms > 0);
}

static void params(msgpack_packer *pk, const ss_params *p) {
    size_t n = (p->steps > 0) + (p->strength >= 0) + (p->reset > 0) + (p->seed >= 0) + (p->deadline_ms > 0);
    msgpack_pack_map(pk, n);
    if (p->steps > 0) { key(pk, "steps"); msgpack_pack_int32(pk, p->steps); }
    if (p->strength >= 0) { key(pk, "strength"); msgpack_pack_double(pk, (double)p->strength); }
    if (p->reset > 0) { key(pk, "reset"); msgpack_pack_true(pk); }
    if (p->seed >= 0) { key(pk, "seed"); msgpack_pack_int64(pk, p->seed); }
    if (p->deadline_ms > 0) { key(pk, "deadline_ms"); msgpack_pack_double(pk, p->deadline_ms); }
}

static void prompt(msgpack_packer *pk, const ss_prompt *p) {
    if (p->count == 0) {
        str(pk, p->texts[0]);
        return;
    }
    msgpack_pack_array(pk, p->count);
    for (uint32_t i = 0; i < p->count; i++) {
        msgpack_pack_array(pk, 2);
        str(pk, p->texts[i]);
        msgpack_pack_double(pk, (double)p->weights[i]);
    }
}

void ss_enc_hello(msgpack_sbuffer *buf, uint64_t req, const char *client_name) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    head(&pk, "hello", 3);
    key(&pk, "protocol"); msgpack_pack_int32(&pk, SS_PROTOCOL_VERSION);
    key(&pk, "client"); str(&pk, client_name);
    key(&pk, "req"); msgpack_pack_uint64(&pk, req);
}

static void channel(msgpack_packer *pk, const ss_channel *c) {
    int enc = c->encoding && c->encoding[0], depth = c->depth_near > 0 || c->depth_far > 0, exp = c->exposure > 0;
    msgpack_pack_map(pk, (size_t)(5 + enc + depth + exp));
    key(pk, "name"); str(pk, c->name);
    key(pk, "format"); str(pk, c->format);
    key(pk, "offset"); msgpack_pack_uint64(pk, c->offset);
    key(pk, "row_pitch"); msgpack_pack_uint32(pk, c->row_pitch);
    key(pk, "first"); msgpack_pack_uint32(pk, c->first);
    if (enc) { key(pk, "encoding"); str(pk, c->encoding); }
    if (depth) {
        key(pk, "depth_range");
        msgpack_pack_array(pk, 2);
        msgpack_pack_double(pk, (double)c->depth_near);
        msgpack_pack_double(pk, (double)c->depth_far);
    }
    if (exp) { key(pk, "exposure"); msgpack_pack_double(pk, (double)c->exposure); }
}

static void regions(msgpack_packer *pk, const ss_ring_desc *r, const uint64_t *offsets, uint64_t bytes) {
    int shm = r->shm_name != NULL;
    msgpack_pack_array(pk, r->slots);
    for (uint32_t i = 0; i < r->slots; i++) {
        msgpack_pack_map(pk, 4);
        key(pk, "handle");
        if (shm) str(pk, r->shm_name); else bin64(pk, r->mem_handle);
        key(pk, "offset"); msgpack_pack_uint64(pk, offsets[i]);
        key(pk, "size"); msgpack_pack_uint64(pk, bytes);
        key(pk, "device"); msgpack_pack_int32(pk, shm ? -1 : r->device);
    }
}

static void ring(msgpack_packer *pk, const ss_ring_desc *r) {
    static const char *const sync_names[3] = {"ready", "released", "done"};
    msgpack_pack_map(pk, 6);
    key(pk, "backend"); str(pk, r->backend);
    key(pk, "slots"); msgpack_pack_uint32(pk, r->slots);
    key(pk, "output_format"); str(pk, r->output_format);
    key(pk, "inputs"); regions(pk, r, r->input_offsets, r->input_bytes);
    key(pk, "outputs"); regions(pk, r, r->output_offsets, r->output_bytes);
    key(pk, "sync");
    if (r->shm_name) {
        msgpack_pack_map(pk, 2);
        key(pk, "handle"); str(pk, r->shm_name);
        key(pk, "offset"); msgpack_pack_uint64(pk, r->sync_offset);
    } else {
        msgpack_pack_map(pk, 3);
        for (int k = 0; k < 3; k++) {
            key(pk, sync_names[k]);
            msgpack_pack_array(pk, r->slots);
            for (uint32_t i = 0; i < r->slots; i++) bin64(pk, r->event_handles[k] + 64 * i);
        }
    }
}

void ss_enc_open(msgpack_sbuffer *buf, uint64_t req, uint32_t width, uint32_t height, const ss_channel *channels,
                 uint32_t channel_count, const ss_ring_desc *r, const ss_prompt *p, const ss_params *pa,
                 uint64_t seed, const char *doorbell) {
    msgpack_packer pk;
    int has_prompt = p && (p->count > 0 || p->texts[0]), has_params = ss_params_any(pa);
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    head(&pk, "open", (size_t)(6 + has_prompt + has_params + (doorbell != NULL)));
    key(&pk, "req"); msgpack_pack_uint64(&pk, req);
    key(&pk, "width"); msgpack_pack_uint32(&pk, width);
    key(&pk, "height"); msgpack_pack_uint32(&pk, height);
    key(&pk, "layout");
    msgpack_pack_map(&pk, 1);
    key(&pk, "channels");
    msgpack_pack_array(&pk, channel_count);
    for (uint32_t i = 0; i < channel_count; i++) channel(&pk, &channels[i]);
    key(&pk, "ring"); ring(&pk, r);
    key(&pk, "seed"); msgpack_pack_uint64(&pk, seed);
    if (has_prompt) { key(&pk, "prompt"); prompt(&pk, p); }
    if (has_params) { key(&pk, "params"); params(&pk, pa); }
    if (doorbell) { key(&pk, "doorbell"); str(&pk, doorbell); }
}

void ss_enc_frame(msgpack_sbuffer *buf, uint64_t session, uint64_t seq, uint32_t slot, const ss_frame_info *f) {
    msgpack_packer pk;
    uint32_t bits = f ? f->fields : 0;
    if ((bits & SS_FRAME_PARAMS) && !ss_params_any(&f->params)) bits &= ~(uint32_t)SS_FRAME_PARAMS;
    size_t n = 3 + !!(bits & SS_FRAME_VIEW) + !!(bits & SS_FRAME_PROJ) + !!(bits & SS_FRAME_JITTER) +
               !!(bits & SS_FRAME_DT) + !!(bits & SS_FRAME_PARAMS);
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    head(&pk, "frame", n);
    key(&pk, "session"); msgpack_pack_uint64(&pk, session);
    key(&pk, "seq"); msgpack_pack_uint64(&pk, seq);
    key(&pk, "slot"); msgpack_pack_uint32(&pk, slot);
    if (bits & SS_FRAME_VIEW) { key(&pk, "view"); floats(&pk, f->view, 16); }
    if (bits & SS_FRAME_PROJ) { key(&pk, "proj"); floats(&pk, f->proj, 16); }
    if (bits & SS_FRAME_JITTER) { key(&pk, "jitter"); floats(&pk, f->jitter, 2); }
    if (bits & SS_FRAME_DT) { key(&pk, "dt"); msgpack_pack_double(&pk, (double)f->dt); }
    if (bits & SS_FRAME_PARAMS) { key(&pk, "params"); params(&pk, &f->params); }
}

void ss_enc_prompt(msgpack_sbuffer *buf, uint64_t req, uint64_t session, const ss_prompt *p, uint32_t blend_frames) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    head(&pk, "prompt", blend_frames ? 4 : 3);
    key(&pk, "req"); msgpack_pack_uint64(&pk, req);
    key(&pk, "session"); msgpack_pack_uint64(&pk, session);
    key(&pk, "prompt"); prompt(&pk, p);
    if (blend_frames) { key(&pk, "blend_frames"); msgpack_pack_uint32(&pk, blend_frames); }
}

void ss_enc_params(msgpack_sbuffer *buf, uint64_t req, uint64_t session, const ss_params *p) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    head(&pk, "params", 3);
    key(&pk, "req"); msgpack_pack_uint64(&pk, req);
    key(&pk, "session"); msgpack_pack_uint64(&pk, session);
    key(&pk, "params"); params(&pk, p);
}

void ss_enc_stats(msgpack_sbuffer *buf, uint64_t req, uint64_t session) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    head(&pk, "stats", session ? 2 : 1);
    key(&pk, "req"); msgpack_pack_uint64(&pk, req);
    if (session) { key(&pk, "session"); msgpack_pack_uint64(&pk, session); }
}

void ss_enc_heartbeat(msgpack_sbuffer *buf, double time_s) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    head(&pk, "heartbeat", 1);
    key(&pk, "time"); msgpack_pack_double(&pk, time_s);
}

void ss_enc_close(msgpack_sbuffer *buf, uint64_t req, uint64_t session) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    head(&pk, "close", 2);
    key(&pk, "req"); msgpack_pack_uint64(&pk, req);
    key(&pk, "session"); msgpack_pack_uint64(&pk, session);
}

/* ---- decoding -------------------------------------------------------------------------------- */

static const char *const TYPE_NAMES[] = {"", "welcome", "opened", "ok", "stats", "closed", "done", "late",
                                         "error", "heartbeat", "bye"};

const char *ss_reply_type_name(ss_reply_type t) {
    return (unsigned)t < sizeof TYPE_NAMES / sizeof *TYPE_NAMES ? TYPE_NAMES[t] : "";
}

static int is_key(const msgpack_object *k, const char *name) {
    size_t n = strlen(name);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

static int as_u64(const msgpack_object *o, uint64_t *out) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) { *out = o->via.u64; return 1; }
    return 0;
}

static int as_i64(const msgpack_object *o, int64_t *out) {
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= (uint64_t)INT64_MAX) {
        *out = (int64_t)o->via.u64;
        return 1;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) { *out = o->via.i64; return 1; }
    return 0;
}

static double as_num(const msgpack_object *o, double fallback) {
    int64_t i;
    if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32) return o->via.f64;
    if (as_i64(o, &i)) return (double)i;
    return fallback;
}

static uint32_t as_u32(const msgpack_object *o) {
    uint64_t v;
    return as_u64(o, &v) && v <= UINT32_MAX ? (uint32_t)v : 0;
}

static void copy_str(const msgpack_object *o, char *dst, size_t cap) {
    size_t n;
    if (o->type != MSGPACK_OBJECT_STR) return;
    n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
    memcpy(dst, o->via.str.ptr, n);
    dst[n] = 0;
}

static void timings(const msgpack_object *m, ss_reply *r) {
    if (m->type != MSGPACK_OBJECT_MAP) return;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key, *v = &m->via.map.ptr[i].val;
        if (is_key(k, SS_DONE_TIMING_QUEUE_MS)) r->queue_ms = as_num(v, 0);
        else if (is_key(k, SS_DONE_TIMING_MODEL_MS)) r->model_ms = as_num(v, 0);
        else if (is_key(k, SS_DONE_TIMING_WRITE_MS)) r->write_ms = as_num(v, 0);
        else if (is_key(k, SS_DONE_TIMING_TOTAL_MS)) r->total_ms = as_num(v, 0);
    }
}

static void session_stats(const msgpack_object *list, ss_reply *r) {
    const msgpack_object *m;
    ss_session_stats *s = &r->stats;
    if (list->type != MSGPACK_OBJECT_ARRAY || list->via.array.size == 0) return;
    m = &list->via.array.ptr[0];
    if (m->type != MSGPACK_OBJECT_MAP) return;
    r->has_stats = 1;
    s->size = sizeof *s;
    s->latency_p50_ms = s->latency_p99_ms = s->model_p50_ms = -1;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key, *v = &m->via.map.ptr[i].val;
        if (is_key(k, "session")) as_u64(v, &s->session_id);
        else if (is_key(k, "frames_in")) as_u64(v, &s->frames_in);
        else if (is_key(k, "done")) as_u64(v, &s->done);
        else if (is_key(k, "late")) as_u64(v, &s->late);
        else if (is_key(k, "dropped")) as_u64(v, &s->dropped);
        else if (is_key(k, "cache_pages")) as_u64(v, &s->cache_pages);
        else if (is_key(k, "latency_p50_ms")) s->latency_p50_ms = as_num(v, -1);
        else if (is_key(k, "latency_p99_ms")) s->latency_p99_ms = as_num(v, -1);
        else if (is_key(k, "model_p50_ms")) s->model_p50_ms = as_num(v, -1);
    }
}

static void fill(const msgpack_object *m, ss_reply *r) {
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key, *v = &m->via.map.ptr[i].val;
        if (is_key(k, "req")) r->has_req = as_u64(v, &r->req);
        else if (is_key(k, "session")) r->has_session = as_u64(v, &r->session);
        else if (is_key(k, "seq")) r->has_seq = as_u64(v, &r->seq);
        else if (is_key(k, "slot")) { int64_t s; if (as_i64(v, &s)) r->slot = s; }
        else if (is_key(k, "late")) r->late = v->type == MSGPACK_OBJECT_BOOLEAN ? v->via.boolean : 0;
        else if (is_key(k, "code") || is_key(k, "reason")) copy_str(v, r->code, sizeof r->code);
        else if (is_key(k, "message")) copy_str(v, r->message, sizeof r->message);
        else if (is_key(k, "timings")) timings(v, r);
        else if (is_key(k, "protocol")) as_i64(v, &r->protocol);
        else if (is_key(k, "heartbeat_ms")) r->heartbeat_ms = as_u32(v);
        else if (is_key(k, "reap_after_ms")) r->reap_after_ms = as_u32(v);
        else if (is_key(k, "max_sessions")) r->max_sessions = as_u32(v);
        else if (is_key(k, "service") && v->type == MSGPACK_OBJECT_STR) copy_str(v, r->service, sizeof r->service);
        else if (is_key(k, "slots")) r->slots = as_u32(v);
        else if (is_key(k, "input_bytes")) as_u64(v, &r->input_bytes);
        else if (is_key(k, "output_bytes")) as_u64(v, &r->output_bytes);
        else if (is_key(k, "cache_pages")) as_u64(v, &r->cache_pages);
        else if (is_key(k, "doorbell")) r->doorbell = v->type == MSGPACK_OBJECT_BOOLEAN ? v->via.boolean : 0;
        else if (is_key(k, "sessions")) session_stats(v, r);
    }
}

int ss_decode_reply(const char *data, size_t size, ss_reply *out) {
    msgpack_unpacked u;
    size_t off = 0;
    int rc = -1;
    const msgpack_object *m;
    memset(out, 0, sizeof *out);
    out->slot = -1;
    if (!data || size == 0 || size > SS_MAX_MESSAGE_BYTES) return -1;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, data, size, &off) != MSGPACK_UNPACK_SUCCESS || off != size) goto done;
    m = &u.data;
    if (m->type != MSGPACK_OBJECT_MAP) goto done;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key, *v = &m->via.map.ptr[i].val;
        if (is_key(k, "type") && v->type == MSGPACK_OBJECT_STR) {
            copy_str(v, out->type_name, sizeof out->type_name);
            rc = 0;
        }
    }
    if (rc != 0) goto done;
    for (int t = SS_REPLY_WELCOME; t <= SS_REPLY_BYE; t++)
        if (strcmp(out->type_name, TYPE_NAMES[t]) == 0) out->type = (ss_reply_type)t;
    fill(m, out);
done:
    msgpack_unpacked_destroy(&u);
    return rc;
}
