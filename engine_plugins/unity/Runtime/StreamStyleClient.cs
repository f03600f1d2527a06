// StreamStyleClient.cs: the safe C# face of libstreamstyle.
//
// StreamStyleClient owns the native client (one per process: its I/O thread keeps the connection,
// heartbeats and reconnects); StreamStyleSession owns a session and its ring. Control calls (open,
// prompt, params, stats, close) wait for the service and throw StreamStyleException with the
// protocol's error code; frame-path calls (TryAcquire, Submit, Poll, TryOutput) never wait and
// never throw for the service being late or gone: they return false, and the game shows its own
// frame. Threading rules are the C library's (docs/engines.md): one thread drives a session's frame
// path; Dispose a session before its client.
using System;
using System.Runtime.InteropServices;

namespace StreamStyle
{
    public sealed class StreamStyleException : Exception
    {
        public Status Status { get; }
        /// <summary>The protocol's error code (e.g. "bad_layout") when the service refused, else the library's word.</summary>
        public string Code { get; }

        public StreamStyleException(Status status, string code, string message)
            : base($"[{code}] {message} ({status})")
        {
            Status = status;
            Code = code;
        }

        internal static void Check(Status st)
        {
            if (st != Status.Ok) throw new StreamStyleException(st, Native.LastErrorCode, Native.LastErrorMessage);
        }
    }

    /// <summary>One channel of the G-buffer layout (docs/gbuffer-layout.md).</summary>
    public struct ChannelDesc
    {
        public string Name, Format, Encoding;
        public ulong Offset;
        public uint RowPitch, First;
        public float DepthNear, DepthFar, Exposure;

        public ChannelDesc(string name, string format, ulong offset, string encoding = null, uint first = 0)
        {
            Name = name; Format = format; Offset = offset; Encoding = encoding; First = first;
            RowPitch = 0; DepthNear = DepthFar = Exposure = 0;
        }
    }

    public sealed class SessionOptions
    {
        public int Width, Height;
        public ChannelDesc[] Channels;
        public ulong InputSlotBytes;
        public string Backend = "shm";          // or "cuda-ipc"
        public int Slots = 3;
        public string OutputFormat = "rgba8";   // or "rgba16f"
        public int Device = 0;
        public string Prompt;
        public Params Params = Params.Unset;
        public long Seed = 0;
    }

    /// <summary>A layout as libstreamstyle takes it: an unmanaged ss_channel array and its UTF-8 strings,
    /// alive until Dispose (the C side copies what it keeps before the call it is passed to returns).</summary>
    internal sealed class NativeChannels : IDisposable
    {
        readonly System.Collections.Generic.List<Utf8> strings = new System.Collections.Generic.List<Utf8>();
        public IntPtr Ptr { get; private set; }
        public uint Count { get; }

        public NativeChannels(ChannelDesc[] channels)
        {
            if (channels == null || channels.Length == 0) throw new ArgumentException("a layout needs channels");
            int chSize = Marshal.SizeOf<Channel>();
            Count = (uint)channels.Length;
            Ptr = Marshal.AllocHGlobal(chSize * channels.Length);
            for (int i = 0; i < channels.Length; i++)
            {
                var c = channels[i];
                var native = new Channel
                {
                    name = S(c.Name), format = S(c.Format), encoding = S(c.Encoding), offset = c.Offset,
                    row_pitch = c.RowPitch, first = c.First, depth_near = c.DepthNear, depth_far = c.DepthFar,
                    exposure = c.Exposure
                };
                Marshal.StructureToPtr(native, Ptr + i * chSize, false);
            }
        }

        public IntPtr S(string text)
        {
            var u = new Utf8(text);
            strings.Add(u);
            return u.Ptr;
        }

        public void Dispose()
        {
            if (Ptr != IntPtr.Zero) Marshal.FreeHGlobal(Ptr);
            Ptr = IntPtr.Zero;
            foreach (var u in strings) u.Dispose();
            strings.Clear();
        }
    }

    public sealed class StreamStyleClient : IDisposable
    {
        IntPtr handle;

        public StreamStyleClient(string address, string name = "streamstyle-unity", uint timeoutMs = 10000)
        {
            using (var a = new Utf8(address))
            using (var n = new Utf8(name))
            {
                var cfg = new ClientConfig
                {
                    size = (uint)Marshal.SizeOf<ClientConfig>(), address = a.Ptr, name = n.Ptr, timeout_ms = timeoutMs
                };
                StreamStyleException.Check(Native.ss_client_create(ref cfg, out handle));
            }
        }

        internal IntPtr Handle
        {
            get
            {
                if (handle == IntPtr.Zero) throw new ObjectDisposedException(nameof(StreamStyleClient));
                return handle;
            }
        }

        public ClientInfo Info
        {
            get
            {
                var info = new ClientInfo { size = (uint)Marshal.SizeOf<ClientInfo>() };
                StreamStyleException.Check(Native.ss_client_get_info(Handle, ref info));
                return info;
            }
        }

        public StreamStyleSession Open(SessionOptions o) => new StreamStyleSession(this, o);

        public void Dispose()
        {
            if (handle != IntPtr.Zero) Native.ss_client_destroy(handle); // closes sessions still open
            handle = IntPtr.Zero;
        }
    }

    public sealed class StreamStyleSession : IDisposable
    {
        IntPtr handle;
        public StreamStyleClient Client { get; }
        FrameInfo frameInfo; // reused: Submit allocates nothing
        Event ev;

        internal StreamStyleSession(StreamStyleClient client, SessionOptions o)
        {
            Client = client;
            Options = o;
            using (var ch = new NativeChannels(o.Channels))
            {
                var cfg = new SessionConfig
                {
                    size = (uint)Marshal.SizeOf<SessionConfig>(), width = (uint)o.Width, height = (uint)o.Height,
                    channels = ch.Ptr, channel_count = ch.Count, input_slot_bytes = o.InputSlotBytes,
                    backend = ch.S(o.Backend), slots = (uint)o.Slots, output_format = ch.S(o.OutputFormat),
                    device = o.Device, prompt = ch.S(o.Prompt), @params = o.Params, seed = o.Seed
                };
                StreamStyleException.Check(Native.ss_session_open(Client.Handle, ref cfg, out handle));
            }
            frameInfo = new FrameInfo
            {
                size = (uint)Marshal.SizeOf<FrameInfo>(), view = new float[16], proj = new float[16], jitter = new float[2],
                @params = Params.Unset
            };
            ev = new Event { code = new byte[32], message = new byte[224] };
        }

        /// <summary>What the session was opened with (the native plugin attaches with the same layout).</summary>
        public SessionOptions Options { get; }

        internal IntPtr Handle
        {
            get
            {
                if (handle == IntPtr.Zero) throw new ObjectDisposedException(nameof(StreamStyleSession));
                return handle;
            }
        }

        public SessionInfo Info
        {
            get
            {
                var info = new SessionInfo { size = (uint)Marshal.SizeOf<SessionInfo>() };
                StreamStyleException.Check(Native.ss_session_get_info(Handle, ref info));
                return info;
            }
        }

        /// <summary>The next input slot to fill, or false: the service still reads it or is reconnecting
        /// (show the raw frame). `stream` is the engine's CUDA stream for cuda-ipc, else zero.</summary>
        public bool TryAcquire(out Slot slot, IntPtr stream = default(IntPtr))
        {
            var st = Native.ss_acquire(Handle, stream, out slot);
            if (st == Status.Busy) return false;
            StreamStyleException.Check(st);
            return true;
        }

        /// <summary>Signal the slot ready and send the frame; false if it could not go (show the raw frame).</summary>
        public bool Submit(uint slot, out ulong seq, float[] view = null, float[] proj = null, float dt = -1,
                           IntPtr stream = default(IntPtr))
        {
            Status st;
            if (view == null && proj == null && dt < 0)
            {
                st = Native.ss_submit_plain(Handle, slot, IntPtr.Zero, stream, out seq);
            }
            else
            {
                frameInfo.fields = FrameFields.None;
                if (view != null) { Array.Copy(view, frameInfo.view, 16); frameInfo.fields |= FrameFields.View; }
                if (proj != null) { Array.Copy(proj, frameInfo.proj, 16); frameInfo.fields |= FrameFields.Proj; }
                if (dt >= 0) { frameInfo.dt = dt; frameInfo.fields |= FrameFields.Dt; }
                st = Native.ss_submit(Handle, slot, ref frameInfo, stream, out seq);
            }
            if (st == Status.Busy) return false;
            StreamStyleException.Check(st);
            return true;
        }

        /// <summary>The oldest event of this session, or false when none has arrived.</summary>
        public bool Poll(out Event e)
        {
            var st = Native.ss_poll(Handle, ref ev);
            e = ev;
            if (st == Status.NoEvent) return false;
            StreamStyleException.Check(st);
            return true;
        }

        /// <summary>Output slot `slot` after its Done event: a pointer to width x height pixels.</summary>
        public IntPtr Output(uint slot, out ulong bytes, IntPtr stream = default(IntPtr))
        {
            StreamStyleException.Check(Native.ss_output(Handle, slot, stream, out IntPtr ptr, out bytes));
            return ptr;
        }

        public void SetPrompt(string prompt, uint blendFrames = 0)
        {
            using (var p = new Utf8(prompt)) StreamStyleException.Check(Native.ss_set_prompt(Handle, p.Ptr, blendFrames));
        }

        public void SetPromptBlend(string[] texts, float[] weights, uint blendFrames = 0)
        {
            var owned = new Utf8[texts.Length];
            var ptrs = new IntPtr[texts.Length];
            try
            {
                for (int i = 0; i < texts.Length; i++) { owned[i] = new Utf8(texts[i]); ptrs[i] = owned[i].Ptr; }
                StreamStyleException.Check(Native.ss_set_prompt_blend(Handle, ptrs, weights, (uint)texts.Length, blendFrames));
            }
            finally
            {
                foreach (var u in owned) u?.Dispose();
            }
        }

        public void SetParams(Params p) => StreamStyleException.Check(Native.ss_set_params(Handle, ref p));

        public SessionStats Stats()
        {
            var s = new SessionStats { size = (uint)Marshal.SizeOf<SessionStats>() };
            StreamStyleException.Check(Native.ss_stats(Handle, ref s));
            return s;
        }

        public void Dispose()
        {
            if (handle != IntPtr.Zero) Native.ss_session_close(handle);
            handle = IntPtr.Zero;
        }
    }
}
