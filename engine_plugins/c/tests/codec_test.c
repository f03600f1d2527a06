/* codec_test: the message codec without sockets, driven by tests/test_c_client.py.
 *   ss_codec_test encode DIR     write one file per request the client sends (DIR/<name>.msgpack);
 *                                the Python contract (interop/protocol.py) must accept every one
 *   ss_codec_test decode FILE..  decode service messages, one line per file: key=value ...
 *   ss_codec_test self           malformed input is refused; strings are bounded */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

static int failures;
#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) { fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); failures++; } \
    } while (0)

static void write_file(const char *dir, const char *name, msgpack_sbuffer *buf) {
    char path[1024];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s.msgpack", dir, name);
    f = fopen(path, "wb");
    if (!f || fwrite(buf->data, 1, buf->size, f) != buf->size) { perror(path); exit(2); }
    fclose(f);
    msgpack_sbuffer_clear(buf);
}

static const ss_channel CHANNELS[] = {
    {"color", "rgba16f", "linear_hdr", 0, 0, 0, 0, 0, 1.5f},
    {"depth", "r32f", NULL, 4096, 0, 0, 0.5f, 500.0f, 0},
    {"roughness", "rg8_unorm", "", 8192, 256, 0, 0, 0, 0},
    {"metallic", "rg8_unorm", NULL, 8192, 256, 1, 0, 0, 0},
};

static int encode(const char *dir) {
    msgpack_sbuffer buf;
    ss_ring_desc ring;
    ss_prompt text = {0, {"watercolor"}, {0}}, blend = {2, {"noir", "neon glow"}, {0.7f, 0.3f}};
    ss_params none, all;
    ss_frame_info info;
    unsigned char mem[64], events[3][3 * 64];
    msgpack_sbuffer_init(&buf);
    ss_params_init(&none);
    ss_params_init(&all);
    all.steps = 3; all.strength = 0.25f; all.reset = 1; all.seed = 42; all.deadline_ms = 16.5;

    ss_enc_hello(&buf, 1, "codec-test");
    write_file(dir, "hello", &buf);

    memset(&ring, 0, sizeof ring);
    ring.backend = SS_BACKEND_SHM; ring.slots = 3; ring.output_format = SS_FORMAT_RGBA8; ring.device = -1;
    ring.shm_name = "ss-test-ring"; ring.sync_offset = SS_SHM_SIGNALS;
    ring.input_bytes = 12000; ring.output_bytes = 64 * 48 * 4;
    for (int i = 0; i < 3; i++) { ring.input_offsets[i] = 4096 + 12288u * i; ring.output_offsets[i] = 40960 + 12288u * i; }
    ss_enc_open(&buf, 2, 64, 48, CHANNELS, 4, &ring, &text, &all, 7, NULL);
    write_file(dir, "open_shm", &buf);
    ss_enc_open(&buf, 3, 64, 48, CHANNELS, 2, &ring, NULL, &none, 0, NULL);
    write_file(dir, "open_shm_minimal", &buf);

    for (int i = 0; i < 64; i++) mem[i] = (unsigned char)(i * 3 + 1);
    for (int k = 0; k < 3; k++) for (int i = 0; i < 3 * 64; i++) events[k][i] = (unsigned char)(k * 64 + i);
    ring.backend = SS_BACKEND_CUDA_IPC; ring.output_format = SS_FORMAT_RGBA16F; ring.device = 0;
    ring.shm_name = NULL; ring.mem_handle = mem;
    for (int k = 0; k < 3; k++) ring.event_handles[k] = events[k];
    ss_enc_open(&buf, 4, 64, 48, CHANNELS, 4, &ring, &blend, &none, 9, "streamstyle-bell-1-1");
    write_file(dir, "open_cuda", &buf);

    ss_enc_frame(&buf, 5, 1, 0, NULL);
    write_file(dir, "frame_minimal", &buf);
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    info.fields = SS_FRAME_VIEW | SS_FRAME_PROJ | SS_FRAME_JITTER | SS_FRAME_DT | SS_FRAME_PARAMS;
    for (int i = 0; i < 16; i++) { info.view[i] = (float)i * 0.5f; info.proj[i] = (float)(i % 5) - 2.0f; }
    info.jitter[0] = 0.25f; info.jitter[1] = -0.25f; info.dt = 1.0f / 60.0f;
    info.params = all;
    ss_enc_frame(&buf, 5, 2, 2, &info);
    write_file(dir, "frame_full", &buf);
    info.fields = SS_FRAME_PARAMS; info.params = none; /* params with nothing set are not sent */
    ss_enc_frame(&buf, 5, 3, 1, &info);
    write_file(dir, "frame_empty_params", &buf);

    ss_enc_prompt(&buf, 6, 5, &text, 0);
    write_file(dir, "prompt_text", &buf);
    ss_enc_prompt(&buf, 7, 5, &blend, 30);
    write_file(dir, "prompt_blend", &buf);
    ss_enc_params(&buf, 8, 5, &all);
    write_file(dir, "params", &buf);
    ss_enc_stats(&buf, 9, 5);
    write_file(dir, "stats_session", &buf);
    ss_enc_stats(&buf, 10, 0);
    write_file(dir, "stats_service", &buf);
    ss_enc_heartbeat(&buf, 1234.5);
    write_file(dir, "heartbeat", &buf);
    ss_enc_close(&buf, 11, 5);
    write_file(dir, "close", &buf);
    msgpack_sbuffer_destroy(&buf);
    return 0;
}

static int decode(int n, char **paths) {
    static char data[SS_MAX_MESSAGE_BYTES + 16];
    for (int i = 0; i < n; i++) {
        FILE *f = fopen(paths[i], "rb");
        size_t size;
        ss_reply r;
        const char *name = strrchr(paths[i], '/');
        if (!f) { perror(paths[i]); return 2; }
        size = fread(data, 1, sizeof data, f);
        fclose(f);
        name = name ? name + 1 : paths[i];
        if (ss_decode_reply(data, size, &r) != 0) {
            printf("%s rc=-1\n", name);
            continue;
        }
        printf("%s rc=0 type=%s known=%d", name, r.type_name, r.type != SS_REPLY_UNKNOWN);
        if (r.has_req) printf(" req=%llu", (unsigned long long)r.req);
        if (r.has_session) printf(" session=%llu", (unsigned long long)r.session);
        if (r.has_seq) printf(" seq=%llu", (unsigned long long)r.seq);
        if (r.slot >= 0) printf(" slot=%lld", (long long)r.slot);
        if (r.type == SS_REPLY_DONE)
            printf(" late=%d queue_ms=%g model_ms=%g write_ms=%g total_ms=%g", r.late, r.queue_ms, r.model_ms,
                   r.write_ms, r.total_ms);
        if (r.code[0]) printf(" code=%s", r.code);
        if (r.message[0]) printf(" message_len=%zu", strlen(r.message));
        if (r.type == SS_REPLY_WELCOME)
            printf(" protocol=%lld heartbeat_ms=%u reap_after_ms=%u max_sessions=%u service=%s", (long long)r.protocol,
                   r.heartbeat_ms, r.reap_after_ms, r.max_sessions, r.service);
        if (r.type == SS_REPLY_OPENED)
            printf(" slots=%u input_bytes=%llu output_bytes=%llu cache_pages=%llu", r.slots,
                   (unsigned long long)r.input_bytes, (unsigned long long)r.output_bytes,
                   (unsigned long long)r.cache_pages);
        if (r.has_stats)
            printf(" stats.session=%llu stats.frames_in=%llu stats.done=%llu stats.late=%llu stats.dropped=%llu "
                   "stats.latency_p50_ms=%g stats.latency_p99_ms=%g stats.model_p50_ms=%g stats.cache_pages=%llu",
                   (unsigned long long)r.stats.session_id, (unsigned long long)r.stats.frames_in,
                   (unsigned long long)r.stats.done, (unsigned long long)r.stats.late,
                   (unsigned long long)r.stats.dropped, r.stats.latency_p50_ms, r.stats.latency_p99_ms,
                   r.stats.model_p50_ms, (unsigned long long)r.stats.cache_pages);
        printf("\n");
    }
    return 0;
}

static void pack_map_type(msgpack_packer *pk, const char *type, int extra) {
    msgpack_pack_map(pk, (size_t)(1 + extra));
    msgpack_pack_str(pk, 4); msgpack_pack_str_body(pk, "type", 4);
    msgpack_pack_str(pk, strlen(type)); msgpack_pack_str_body(pk, type, strlen(type));
}

static int self_test(void) {
    msgpack_sbuffer buf;
    msgpack_packer pk;
    ss_reply r;
    char big[600];
    msgpack_sbuffer_init(&buf);
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);

    CHECK(ss_decode_reply(NULL, 0, &r) == -1);
    CHECK(ss_decode_reply("", 0, &r) == -1);
    CHECK(ss_decode_reply("\xc1", 1, &r) == -1);          /* never-used msgpack byte */
    msgpack_pack_array(&pk, 1); msgpack_pack_int(&pk, 1);  /* not a map */
    CHECK(ss_decode_reply(buf.data, buf.size, &r) == -1);
    msgpack_sbuffer_clear(&buf);
    msgpack_pack_map(&pk, 1); msgpack_pack_str(&pk, 3); msgpack_pack_str_body(&pk, "req", 3); msgpack_pack_int(&pk, 1);
    CHECK(ss_decode_reply(buf.data, buf.size, &r) == -1);  /* no type */
    msgpack_sbuffer_clear(&buf);
    msgpack_pack_map(&pk, 1); msgpack_pack_str(&pk, 4); msgpack_pack_str_body(&pk, "type", 4); msgpack_pack_int(&pk, 3);
    CHECK(ss_decode_reply(buf.data, buf.size, &r) == -1);  /* type not a string */
    msgpack_sbuffer_clear(&buf);
    pack_map_type(&pk, "heartbeat", 0);
    CHECK(ss_decode_reply(buf.data, buf.size, &r) == 0 && r.type == SS_REPLY_HEARTBEAT);
    CHECK(ss_decode_reply(buf.data, buf.size - 1, &r) == -1); /* truncated */
    msgpack_pack_nil(&pk);
    CHECK(ss_decode_reply(buf.data, buf.size, &r) == -1);  /* trailing bytes */
    msgpack_sbuffer_clear(&buf);
    pack_map_type(&pk, "future_type", 0);
    CHECK(ss_decode_reply(buf.data, buf.size, &r) == 0 && r.type == SS_REPLY_UNKNOWN);
    msgpack_sbuffer_clear(&buf);
    memset(big, 'x', sizeof big);
    pack_map_type(&pk, "error", 3);
    msgpack_pack_str(&pk, 4); msgpack_pack_str_body(&pk, "code", 4);
    msgpack_pack_str(&pk, sizeof big); msgpack_pack_str_body(&pk, big, sizeof big);
    msgpack_pack_str(&pk, 7); msgpack_pack_str_body(&pk, "message", 7);
    msgpack_pack_str(&pk, sizeof big); msgpack_pack_str_body(&pk, big, sizeof big);
    msgpack_pack_str(&pk, 3); msgpack_pack_str_body(&pk, "seq", 3); msgpack_pack_int(&pk, -5); /* not a seq */
    CHECK(ss_decode_reply(buf.data, buf.size, &r) == 0);
    CHECK(strlen(r.code) == sizeof r.code - 1 && strlen(r.message) == sizeof r.message - 1 && !r.has_seq);
    msgpack_sbuffer_destroy(&buf);
    printf("self: %d failures\n", failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "encode") == 0) return encode(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "decode") == 0) return decode(argc - 2, argv + 2);
    if (argc == 2 && strcmp(argv[1], "self") == 0) return self_test();
    fprintf(stderr, "usage: ss_codec_test encode DIR | decode FILE... | self\n");
    return 2;
}
