// MonoSmoke.cs: the C# layer under plain mono, driven by tests/test_c_client.py.
//   mono MonoSmoke.exe layout        every ABI struct's size and field offsets as C# marshals them
//   mono MonoSmoke.exe run ADDRESS   open a session, 5 frames, a bad layout refused, stats, close
//   mono MonoSmoke.exe unity-layout  the native plugin's structs (StreamStyleUnityNative.cs) as C# marshals them
//   mono MonoSmoke.exe unity-plugin  the plugin's bindings against the real libStreamStyleUnity, without Unity
// (Unity skips folders ending in "~": this is not part of the package's build.)
using System;
using System.Runtime.InteropServices;
using StreamStyle;

static class MonoSmoke
{
    const int W = 64, H = 48;

    static void Offsets<T>(string name, params string[] fields)
    {
        Console.WriteLine($"{name}.size {Marshal.SizeOf<T>()}");
        foreach (var f in fields)
            Console.WriteLine($"{name}.{f} {Marshal.OffsetOf<T>(f)}");
    }

    static int Layout()
    {
        Offsets<ClientConfig>("ss_client_config", "address", "name", "timeout_ms", "flags");
        Offsets<ClientInfo>("ss_client_info", "connected", "reconnects", "heartbeat_ms", "reap_after_ms", "max_sessions",
                            "service", "spun_us", "period_ms", "submits", "wakes", "unwoken");
        Offsets<Channel>("ss_channel", "name", "format", "encoding", "offset", "row_pitch", "first", "depth_near",
                         "depth_far", "exposure");
        Offsets<Params>("ss_params", "steps", "strength", "reset", "seed", "deadline_ms");
        Offsets<SessionConfig>("ss_session_config", "width", "height", "channels", "channel_count", "input_slot_bytes",
                               "backend", "slots", "output_format", "device", "prompt", "params", "seed");
        Offsets<SessionStats>("ss_session_stats", "session_id", "frames_in", "done", "late", "dropped", "cache_pages",
                              "latency_p50_ms", "latency_p99_ms", "model_p50_ms");
        Offsets<SessionInfo>("ss_session_info", "session_id", "slots", "width", "height", "input_slot_bytes",
                             "output_slot_bytes", "live", "events_lost", "doorbell", "doorbell_answers", "doorbell_polled");
        Offsets<Slot>("ss_slot", "index", "input", "input_bytes");
        Offsets<FrameInfo>("ss_frame_info", "fields", "view", "proj", "jitter", "dt", "params");
        Offsets<Event>("ss_event", "kind", "seq", "slot", "late", "code", "message", "queue_ms", "model_ms", "write_ms",
                       "total_ms", "sent_ns", "received_ns");
        return 0;
    }

    // The reference engine's layout (planes back to back, 256-byte aligned) and plausible contents.
    static ChannelDesc[] ReferenceLayout(out ulong slotBytes, out byte[] frame)
    {
        var spec = new[] {
            ("color", "rgba16f", "linear_hdr", 8, 0u), ("depth", "r32f", "linear", 4, 0u),
            ("normals", "rgba16f", "signed", 8, 0u), ("albedo", "rgba8_unorm", "unit", 4, 0u),
            ("roughness", "rg8_unorm", "unit", 2, 0u), ("metallic", "rg8_unorm", "unit", 2, 1u),
            ("motion", "rg16f", "pixels", 4, 0u), ("ids", "r32_uint", "uint", 4, 0u) };
        var chans = new ChannelDesc[spec.Length];
        ulong offset = 0, last = 0;
        for (int i = 0; i < spec.Length; i++)
        {
            var (name, fmt, enc, bytes, first) = spec[i];
            if (first != 0) { chans[i] = new ChannelDesc(name, fmt, last, enc, first); continue; }
            chans[i] = new ChannelDesc(name, fmt, offset, enc);
            last = offset;
            offset = (offset + (ulong)(W * H * bytes) + 255) / 256 * 256;
        }
        slotBytes = offset;
        frame = new byte[offset];
        var rng = new Random(7);
        rng.NextBytes(frame);
        // floats must be finite and depth positive: write them explicitly
        for (int px = 0; px < W * H; px++)
        {
            BitConverter.GetBytes(1.0f + 9.0f * (float)rng.NextDouble()).CopyTo(frame, (int)chans[1].Offset + 4 * px);
            for (int k = 0; k < 4; k++)
            {
                ushort half = (ushort)(0x3000 + rng.Next(0x0c00)); // 0.125 .. 1
                BitConverter.GetBytes(half).CopyTo(frame, (int)chans[0].Offset + 8 * px + 2 * k);
                BitConverter.GetBytes((ushort)(half ^ (k == 1 ? 0x8000 : 0))).CopyTo(frame, (int)chans[2].Offset + 8 * px + 2 * k);
            }
            BitConverter.GetBytes((uint)0).CopyTo(frame, (int)chans[6].Offset + 4 * px);
        }
        return chans;
    }

    static int failures;
    static void Check(bool ok, string what)
    {
        if (!ok) { Console.WriteLine($"FAIL {what}"); failures++; }
    }

    static int Run(string address)
    {
        var chans = ReferenceLayout(out ulong slotBytes, out byte[] frame);
        using (var client = new StreamStyleClient(address, "mono-smoke", 20000))
        {
            Check(client.Info.connected == 1, "connected");
            try
            {
                client.Open(new SessionOptions { Width = W, Height = H, Channels = new[] { chans[0] }, InputSlotBytes = slotBytes });
                Check(false, "a layout without depth is refused");
            }
            catch (StreamStyleException e)
            {
                Check(e.Status == Status.Refused && e.Code == "bad_layout", $"bad_layout, got {e.Code}");
            }
            try
            {
                client.Open(new SessionOptions { Width = W, Height = H, Channels = chans, InputSlotBytes = slotBytes, Slots = 2 });
                Check(false, "2 slots are refused");
            }
            catch (StreamStyleException e)
            {
                Check(e.Status == Status.InvalidArgument, $"invalid argument, got {e.Status}");
            }
            using (var s = client.Open(new SessionOptions { Width = W, Height = H, Channels = chans, InputSlotBytes = slotBytes, Seed = 3 }))
            {
                int done = 0;
                for (int i = 0; i < 5; i++)
                {
                    Slot slot;
                    var end = DateTime.UtcNow.AddSeconds(30);
                    while (!s.TryAcquire(out slot))
                    {
                        if (DateTime.UtcNow > end) { Check(false, "a slot"); return 1; }
                        System.Threading.Thread.Sleep(1);
                    }
                    Marshal.Copy(frame, 0, slot.input, frame.Length);
                    var view = new float[16];
                    view[0] = view[5] = view[10] = view[15] = 1;
                    Check(s.Submit(slot.index, out ulong seq, view: view, dt: 1f / 60), "submitted");
                    while (DateTime.UtcNow < end)
                    {
                        if (s.Poll(out Event e))
                        {
                            if (e.seq != seq) continue;
                            Check(e.kind == EventKind.Done, $"done, got {e.kind} {e.Code} {e.Message}");
                            if (e.kind == EventKind.Done)
                            {
                                IntPtr px = s.Output((uint)e.slot, out ulong bytes);
                                var rgba = new byte[bytes];
                                Marshal.Copy(px, rgba, 0, rgba.Length);
                                Check(bytes == W * H * 4 && rgba[3] == 255 && rgba[rgba.Length - 1] == 255, "opaque rgba8");
                                done++;
                            }
                            break;
                        }
                        System.Threading.Thread.Sleep(1);
                    }
                }
                var st = s.Stats();
                Console.WriteLine($"mono: {done} frames done, service says done={st.done} p50={st.latency_p50_ms:F2} ms");
                Check(done == 5 && st.done == 5, "5 frames");
                try { s.SetParams(new Params { steps = 9, strength = -1, seed = -1 }); Check(false, "steps 9 refused"); }
                catch (StreamStyleException e) { Check(e.Status == Status.InvalidArgument, "steps 9 refused locally"); }
            }
        }
        Console.WriteLine(failures == 0 ? "RESULT ok" : $"RESULT failed {failures}");
        return failures == 0 ? 0 : 1;
    }

    static int UnityLayout()
    {
        Offsets<PluginFrameData>("ssu_frame_data", "flags", "planes", "target", "info");
        Offsets<PluginPlane>("ssu_plane", "channel", "format", "vk_format");
        Offsets<PluginAttachConfig>("ssu_attach_config", "session", "backend", "cuda_device", "width", "height", "channels",
                                    "channel_count", "input_slot_bytes", "output_format");
        Offsets<FramesStats>("ssvk_frames_stats", "cuda", "live", "runs", "sent", "busy", "done", "late", "errors",
                             "composited", "last_sent_seq", "last_done_seq", "last_composited_seq", "last_code",
                             "last_message");
        Console.WriteLine($"SSU_FRAME_SEND {(int)PluginFrameFlags.Send}");
        Console.WriteLine($"SSU_FRAME_COMPOSITE {(int)PluginFrameFlags.Composite}");
        Console.WriteLine($"SSU_ABI_VERSION {UnityPluginNative.StreamStyleUnity_AbiVersion()}");
        Console.WriteLine($"SSVK_MAX_PLANES {PluginFrameData.MaxPlanes}");
        return 0;
    }

    delegate void RenderEvent(int eventId, IntPtr data);

    // Outside Unity: the plugin loads, says it has no device, refuses to attach with a reason, and its
    // render event ignores a frame (there is nothing to send it to); the frame ring writes records
    // the C side reads as ssu_frame_data.
    static int UnityPlugin()
    {
        int failures = 0;
        Action<bool, string> check = (ok, what) => { if (!ok) { Console.WriteLine($"FAIL {what}"); failures++; } };
        check(!StreamStyleUnityPlugin.DeviceReady, "ready without Unity");
        check(StreamStyleUnityPlugin.RenderEventFunc != IntPtr.Zero, "a render event function");
        var cfg = new PluginAttachConfig { size = (uint)Marshal.SizeOf<PluginAttachConfig>(), session = new IntPtr(1) };
        check(UnityPluginNative.StreamStyleUnity_Attach(ref cfg) == Status.Unavailable, "attach without a device");
        check(UnityPluginNative.LastError.Contains("not ready"), $"the reason: {UnityPluginNative.LastError}");
        var stats = new FramesStats { size = (uint)Marshal.SizeOf<FramesStats>() };
        check(UnityPluginNative.StreamStyleUnity_GetStats(ref stats) == Status.WrongState, "stats without a session");
        using (var ring = new PluginFrameRing(2))
        {
            var planes = new[] { new IntPtr(0x1000), new IntPtr(0x2000) };
            var view = new float[16];
            view[3] = 2.5f;
            IntPtr a = ring.Write(PluginFrameFlags.Send | PluginFrameFlags.Composite, planes, 2, new IntPtr(0x3000), view, null, 0.016f);
            IntPtr b = ring.Write(PluginFrameFlags.Composite, planes, 0, IntPtr.Zero);
            check(a != b, "two records");
            var back = Marshal.PtrToStructure<PluginFrameData>(a);
            check(back.size == Marshal.SizeOf<PluginFrameData>() && back.flags == (PluginFrameFlags.Send | PluginFrameFlags.Composite),
                  "record header");
            check(back.planes[0] == planes[0] && back.planes[1] == planes[1] && back.planes[2] == IntPtr.Zero, "record planes");
            check(back.target == new IntPtr(0x3000) && back.info.size == Marshal.SizeOf<FrameInfo>(), "record target, info size");
            check(back.info.fields == (FrameFields.View | FrameFields.Dt) && back.info.view[3] == 2.5f &&
                  Math.Abs(back.info.dt - 0.016f) < 1e-7 && back.info.@params.strength == -1f && back.info.@params.seed == -1,
                  "record frame info");
            check(Marshal.PtrToStructure<PluginFrameData>(b).info.size == 0, "no frame info: size 0");
            var render = Marshal.GetDelegateForFunctionPointer<RenderEvent>(StreamStyleUnityPlugin.RenderEventFunc);
            render(StreamStyleUnityPlugin.FrameEventId, a); // no Unity, nothing attached: ignored
        }
        Console.WriteLine(failures == 0 ? "RESULT ok" : $"RESULT failed {failures}");
        return failures == 0 ? 0 : 1;
    }

    static int Main(string[] args)
    {
        if (args.Length == 1 && args[0] == "unity-layout") return UnityLayout();
        if (args.Length == 1 && args[0] == "unity-plugin") return UnityPlugin();
        if (Native.ss_abi_version() != 1) { Console.WriteLine("FAIL abi version"); return 1; }
        if (args.Length == 1 && args[0] == "layout") return Layout();
        if (args.Length == 2 && args[0] == "run") return Run(args[1]);
        Console.Error.WriteLine("usage: mono MonoSmoke.exe layout | run ADDRESS | unity-layout | unity-plugin");
        return 2;
    }
}
