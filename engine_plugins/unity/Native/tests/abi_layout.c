/* abi_layout: the plugin's ABI structs, one "struct.field offset" line each, for the C# bindings' test
 * (Runtime/StreamStyleUnityNative.cs; Tests~/MonoSmoke.cs prints the same from Marshal.OffsetOf). */
#include <stddef.h>
#include <stdio.h>

#include "streamstyle_unity.h"

#define F(s, f) printf(#s "." #f " %zu\n", offsetof(s, f))
#define S(s) printf(#s ".size %zu\n", sizeof(s))

int main(void) {
    S(ssu_frame_data); F(ssu_frame_data, flags); F(ssu_frame_data, planes); F(ssu_frame_data, target);
    F(ssu_frame_data, info);
    S(ssu_plane); F(ssu_plane, channel); F(ssu_plane, format); F(ssu_plane, vk_format);
    S(ssu_attach_config); F(ssu_attach_config, session); F(ssu_attach_config, backend); F(ssu_attach_config, cuda_device);
    F(ssu_attach_config, width); F(ssu_attach_config, height); F(ssu_attach_config, channels);
    F(ssu_attach_config, channel_count); F(ssu_attach_config, input_slot_bytes); F(ssu_attach_config, output_format);
    S(ssvk_frames_stats); F(ssvk_frames_stats, cuda); F(ssvk_frames_stats, live); F(ssvk_frames_stats, runs);
    F(ssvk_frames_stats, sent); F(ssvk_frames_stats, busy); F(ssvk_frames_stats, done); F(ssvk_frames_stats, late);
    F(ssvk_frames_stats, errors); F(ssvk_frames_stats, composited); F(ssvk_frames_stats, last_sent_seq);
    F(ssvk_frames_stats, last_done_seq); F(ssvk_frames_stats, last_composited_seq); F(ssvk_frames_stats, last_code);
    F(ssvk_frames_stats, last_message);
    printf("SSU_FRAME_SEND %d\nSSU_FRAME_COMPOSITE %d\nSSU_ABI_VERSION %d\nSSVK_MAX_PLANES %u\n", SSU_FRAME_SEND,
           SSU_FRAME_COMPOSITE, SSU_ABI_VERSION, SSVK_MAX_PLANES);
    return 0;
}
