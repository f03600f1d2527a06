/* abi_layout: every ABI struct's size and field offsets, one "struct.field offset" line each, for
 * the C# layer's test (engine_plugins/unity/Tests~/MonoSmoke.cs prints the same from
 * Marshal.OffsetOf, and tests/test_c_client.py compares the two). */
#include <stddef.h>
#include <stdio.h>

#include "streamstyle.h"

#define F(s, f) printf(#s "." #f " %zu\n", offsetof(s, f))
#define S(s) printf(#s ".size %zu\n", sizeof(s))

int main(void) {
    S(ss_client_config); F(ss_client_config, address); F(ss_client_config, name); F(ss_client_config, timeout_ms);
    F(ss_client_config, flags);
    S(ss_client_info); F(ss_client_info, connected); F(ss_client_info, reconnects); F(ss_client_info, heartbeat_ms);
    F(ss_client_info, reap_after_ms); F(ss_client_info, max_sessions); F(ss_client_info, service);
    F(ss_client_info, spun_us); F(ss_client_info, period_ms); F(ss_client_info, submits); F(ss_client_info, wakes); F(ss_client_info, unwoken);
    S(ss_channel); F(ss_channel, name); F(ss_channel, format); F(ss_channel, encoding); F(ss_channel, offset);
    F(ss_channel, row_pitch); F(ss_channel, first); F(ss_channel, depth_near); F(ss_channel, depth_far);
    F(ss_channel, exposure);
    S(ss_params); F(ss_params, steps); F(ss_params, strength); F(ss_params, reset); F(ss_params, seed);
    F(ss_params, deadline_ms);
    S(ss_session_config); F(ss_session_config, width); F(ss_session_config, height); F(ss_session_config, channels);
    F(ss_session_config, channel_count); F(ss_session_config, input_slot_bytes); F(ss_session_config, backend);
    F(ss_session_config, slots); F(ss_session_config, output_format); F(ss_session_config, device);
    F(ss_session_config, prompt); F(ss_session_config, params); F(ss_session_config, seed);
    S(ss_session_stats); F(ss_session_stats, session_id); F(ss_session_stats, frames_in); F(ss_session_stats, done);
    F(ss_session_stats, late); F(ss_session_stats, dropped); F(ss_session_stats, cache_pages);
    F(ss_session_stats, latency_p50_ms); F(ss_session_stats, latency_p99_ms); F(ss_session_stats, model_p50_ms);
    S(ss_session_info); F(ss_session_info, session_id); F(ss_session_info, slots); F(ss_session_info, width);
    F(ss_session_info, height); F(ss_session_info, input_slot_bytes); F(ss_session_info, output_slot_bytes);
    F(ss_session_info, live); F(ss_session_info, events_lost); F(ss_session_info, doorbell); F(ss_session_info, doorbell_answers); F(ss_session_info, doorbell_polled);
    S(ss_slot); F(ss_slot, index); F(ss_slot, input); F(ss_slot, input_bytes);
    S(ss_frame_info); F(ss_frame_info, fields); F(ss_frame_info, view); F(ss_frame_info, proj);
    F(ss_frame_info, jitter); F(ss_frame_info, dt); F(ss_frame_info, params);
    S(ss_event); F(ss_event, kind); F(ss_event, seq); F(ss_event, slot); F(ss_event, late); F(ss_event, code);
    F(ss_event, message); F(ss_event, queue_ms); F(ss_event, model_ms); F(ss_event, write_ms);
    F(ss_event, total_ms); F(ss_event, sent_ns); F(ss_event, received_ns);
    return 0;
}
