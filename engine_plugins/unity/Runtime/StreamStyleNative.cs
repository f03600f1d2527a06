// StreamStyleNative.cs: P/Invoke declarations of libstreamstyle's ABI (engine_plugins/c/include/streamstyle.h).
//
// One struct here per struct there, field for field (sequential layout; the C# test compares every
// offset with the C compiler's). Strings go in as pointers to UTF-8 the caller keeps alive for the
// call (Utf8 below); nothing here allocates on the frame path. Use StreamStyleClient/StreamStyleSession
// (StreamStyleClient.cs) rather than these directly. No UnityEngine dependency: this compiles and runs
// under plain mono, which is how it is tested.
using System;
using System.Runtime.InteropServices;
using System.Text;

namespace StreamStyle
{
    public enum Status
    {
        Ok = 0,
        Busy = 1,
        NoEvent = 2,
        InvalidArgument = -1,
        WrongState = -2,
        Unavailable = -3,
        Refused = -4,
        NoCuda = -5,
        CudaFailed = -6,
        SystemFailed = -7,
        OutOfMemory = -8,
    }

    public enum EventKind
    {
        Done = 1,
        Late = 2,
        Error = 3,
        ServiceLost = 4,
        Reopened = 5,
    }

    [Flags]
    public enum FrameFields : uint
    {
        None = 0,
        View = 1,
        Proj = 2,
        Jitter = 4,
        Dt = 8,
        Params = 16,
    }

    [Flags]
    public enum ClientFlags : uint
    {
        None = 0,
        NoAnticipation = 1, // SS_CLIENT_NO_ANTICIPATION: the I/O thread never stays awake for the frame rhythm
        NoDoorbell = 2, // SS_CLIENT_NO_DOORBELL: sessions get no shared-memory doorbell (ZeroMQ only)
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct ClientConfig
    {
        public uint size;
        public IntPtr address;
        public IntPtr name;
        public uint timeout_ms;
        public ClientFlags flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct ClientInfo
    {
        public uint size;
        public int connected;
        public ulong reconnects;
        public uint heartbeat_ms, reap_after_ms, max_sessions;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 64)] public byte[] service;
        public ulong spun_us;    // time the I/O thread spent awake anticipating submits and answers
        public double period_ms; // the submit interval it learned (0: none steady)
        public ulong submits, wakes; // submits, and those that had to wake the I/O thread (a system call)
        public ulong unwoken; // submits that left it asleep: the service watched the doorbell they rang
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Channel
    {
        public IntPtr name, format, encoding;
        public ulong offset;
        public uint row_pitch, first;
        public float depth_near, depth_far, exposure;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Params
    {
        public int steps;          // 1..4; 0: unset
        public float strength;     // 0..1; < 0: unset
        public int reset;          // 1: camera cut
        public long seed;          // >= 0; < 0: unset
        public double deadline_ms; // 0: unset

        public static Params Unset => new Params { steps = 0, strength = -1f, reset = 0, seed = -1, deadline_ms = 0 };
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct SessionConfig
    {
        public uint size;
        public uint width, height;
        public IntPtr channels;
        public uint channel_count;
        public ulong input_slot_bytes;
        public IntPtr backend;
        public uint slots;
        public IntPtr output_format;
        public int device;
        public IntPtr prompt;
        public Params @params;
        public long seed;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct SessionStats
    {
        public uint size;
        public ulong session_id, frames_in, done, late, dropped, cache_pages;
        public double latency_p50_ms, latency_p99_ms, model_p50_ms;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct SessionInfo
    {
        public uint size;
        public ulong session_id;
        public uint slots, width, height;
        public ulong input_slot_bytes, output_slot_bytes;
        public int live;
        public ulong events_lost;
        public int doorbell; // 1 while the service uses the session's doorbell
        public ulong doorbell_answers; // answers that came through it before their ZeroMQ copy
        public ulong doorbell_polled; // of those, the ones ss_poll took on its caller's thread
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Slot
    {
        public uint index;
        public IntPtr input; // shm: host memory; cuda-ipc: a CUdeviceptr
        public ulong input_bytes;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct FrameInfo
    {
        public uint size;
        public FrameFields fields;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 16)] public float[] view;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 16)] public float[] proj;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 2)] public float[] jitter;
        public float dt;
        public Params @params;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct Event
    {
        public EventKind kind;
        public ulong seq;
        public int slot;
        public int late;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 32)] public byte[] code;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 224)] public byte[] message;
        public double queue_ms, model_ms, write_ms, total_ms;
        public ulong sent_ns, received_ns; // CLOCK_MONOTONIC: when the I/O thread sent the frame, received this

        public string Code => Native.CString(code);
        public string Message => Native.CString(message);
    }

    public static class Native
    {
        const string Lib = "streamstyle"; // libstreamstyle.so / streamstyle.dll / libstreamstyle.dylib

        [DllImport(Lib)] public static extern int ss_abi_version();
        [DllImport(Lib)] public static extern IntPtr ss_last_error_code();
        [DllImport(Lib)] public static extern IntPtr ss_last_error_message();
        [DllImport(Lib)] public static extern IntPtr ss_status_name(Status status);
        [DllImport(Lib)] public static extern void ss_params_init(ref Params p);

        [DllImport(Lib)] public static extern Status ss_client_create(ref ClientConfig config, out IntPtr client);
        [DllImport(Lib)] public static extern Status ss_client_destroy(IntPtr client);
        [DllImport(Lib)] public static extern Status ss_client_get_info(IntPtr client, ref ClientInfo info);

        [DllImport(Lib)] public static extern Status ss_session_open(IntPtr client, ref SessionConfig config, out IntPtr session);
        [DllImport(Lib)] public static extern Status ss_session_close(IntPtr session);
        [DllImport(Lib)] public static extern Status ss_set_prompt(IntPtr session, IntPtr prompt, uint blendFrames);
        [DllImport(Lib)] public static extern Status ss_set_prompt_blend(IntPtr session, IntPtr[] texts, float[] weights,
                                                                         uint count, uint blendFrames);
        [DllImport(Lib)] public static extern Status ss_set_params(IntPtr session, ref Params p);
        [DllImport(Lib)] public static extern Status ss_stats(IntPtr session, ref SessionStats stats);
        [DllImport(Lib)] public static extern Status ss_session_get_info(IntPtr session, ref SessionInfo info);

        [DllImport(Lib)] public static extern Status ss_acquire(IntPtr session, IntPtr stream, out Slot slot);
        [DllImport(Lib)] public static extern Status ss_submit(IntPtr session, uint slot, ref FrameInfo info, IntPtr stream,
                                                               out ulong seq);
        [DllImport(Lib, EntryPoint = "ss_submit")]
        public static extern Status ss_submit_plain(IntPtr session, uint slot, IntPtr noInfo, IntPtr stream, out ulong seq);
        [DllImport(Lib)] public static extern Status ss_poll(IntPtr session, ref Event ev);
        [DllImport(Lib)] public static extern Status ss_output(IntPtr session, uint slot, IntPtr stream, out IntPtr ptr,
                                                               out ulong bytes);

        public static string CString(IntPtr p)
        {
            if (p == IntPtr.Zero) return "";
            int n = 0;
            while (Marshal.ReadByte(p, n) != 0) n++;
            var bytes = new byte[n];
            Marshal.Copy(p, bytes, 0, n);
            return Encoding.UTF8.GetString(bytes);
        }

        public static string CString(byte[] b)
        {
            if (b == null) return "";
            int n = Array.IndexOf(b, (byte)0);
            return Encoding.UTF8.GetString(b, 0, n < 0 ? b.Length : n);
        }

        public static string LastErrorCode => CString(ss_last_error_code());
        public static string LastErrorMessage => CString(ss_last_error_message());
    }

    /// <summary>A NUL-terminated UTF-8 copy of a string in unmanaged memory, freed on Dispose.</summary>
    public sealed class Utf8 : IDisposable
    {
        public IntPtr Ptr { get; private set; }

        public Utf8(string s)
        {
            if (s == null) return;
            var bytes = Encoding.UTF8.GetBytes(s);
            Ptr = Marshal.AllocHGlobal(bytes.Length + 1);
            Marshal.Copy(bytes, 0, Ptr, bytes.Length);
            Marshal.WriteByte(Ptr, bytes.Length, 0);
        }

        public void Dispose()
        {
            if (Ptr != IntPtr.Zero) Marshal.FreeHGlobal(Ptr);
            Ptr = IntPtr.Zero;
        }
    }
}
