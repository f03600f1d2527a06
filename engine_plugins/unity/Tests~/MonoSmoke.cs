// MonoSmoke.cs: the C# layer under plain mono, driven by tests/test_c_client.py.
//   mono MonoSmoke.exe layout        every ABI struct's size and field offsets as C# marshals them
//   mono MonoSmoke.exe run ADDRESS   open a session, 5 frames, a bad layout refused, stats, close
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
        Offsets<ClientConfig>("ss_client_config", "address", "name", "timeout_ms");
        Offsets<ClientInfo>("ss_client_info", "connected", "reconnects", "heartbeat_ms", "reap_after_ms", "max_sessions",
                            "service");
        Offsets<Channel>("ss_channel", "name", "format", "encoding", "offset", "row_pitch", "first", "depth_near",
                         "depth_far", "exposure");
        Offsets<Params>("ss_params", "steps", "strength", "reset", "seed", "deadline_ms");
        Offsets<SessionConfig>("ss_session_config", "width", "height", "channels", "channel_count", "input_slot_bytes",
                               "backend", "slots", "output_format", "device", "prompt", "params", "seed");
        Offsets<SessionStats>("ss_session_stats", "session_id", "frames_in", "done", "late", "dropped", "cache_pages",
                              "latency_p50_ms", "latency_p99_ms", "model_p50_ms");
        Offsets<SessionInfo>("ss_session_info", "session_id", "slots", "width", "height", "input_slot_bytes",
                             "output_slot_bytes", "live", "events_lost");
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

    static int Main(string[] args)
    {
        if (Native.ss_abi_version() != 1) { Console.WriteLine("FAIL abi version"); return 1; }
        if (args.Length == 1 && args[0] == "layout") return Layout();
        if (args.Length == 2 && args[0] == "run") return Run(args[1]);
        Console.Error.WriteLine("usage: mono MonoSmoke.exe layout | run ADDRESS");
        return 2;
    }
}
