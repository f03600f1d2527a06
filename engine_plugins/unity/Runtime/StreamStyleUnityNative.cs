// StreamStyleUnityNative.cs: the C# side of the native rendering plugin (engine_plugins/unity/Native,
// include/streamstyle_unity.h): its P/Invoke declarations, its structs field for field (the mono test
// compares every offset with the C compiler's), the ring of unmanaged frame records that
// CommandBuffer.IssuePluginEventAndData hands to the render thread, and StreamStyleUnityPlugin, which
// attaches a StreamStyleSession to Unity's Vulkan device. No UnityEngine dependency, so it compiles and
// runs under plain mono; StreamStyle.Engine (Runtime/Engine) issues the events from a camera.
using System;
using System.Runtime.InteropServices;

namespace StreamStyle
{
    [Flags]
    public enum PluginFrameFlags : uint
    {
        None = 0,
        Send = 1,       // SSU_FRAME_SEND: send this frame's planes
        Composite = 2,  // SSU_FRAME_COMPOSITE: copy the newest stylized frame into the target
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PluginFrameData
    {
        public const int MaxPlanes = 8; // SSVK_MAX_PLANES
        public uint size;
        public PluginFrameFlags flags;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = MaxPlanes)] public IntPtr[] planes;
        public IntPtr target;
        public FrameInfo info;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PluginPlane
    {
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 32)] public byte[] channel;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 16)] public byte[] format;
        public uint vk_format;

        public string Channel => Native.CString(channel);
        public string Format => Native.CString(format);
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PluginAttachConfig
    {
        public uint size;
        public IntPtr session;
        public IntPtr backend;
        public int cuda_device;
        public uint width, height;
        public IntPtr channels;
        public uint channel_count;
        public ulong input_slot_bytes;
        public IntPtr output_format;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct FramesStats
    {
        public uint size;
        public int cuda, live;
        public ulong runs, sent, busy, done, late, errors, composited;
        public ulong last_sent_seq, last_done_seq, last_composited_seq;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 32)] public byte[] last_code;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = 224)] public byte[] last_message;

        public string LastCode => Native.CString(last_code);
        public string LastMessage => Native.CString(last_message);
    }

    public static class UnityPluginNative
    {
        const string Lib = "StreamStyleUnity"; // libStreamStyleUnity.so / StreamStyleUnity.dll

        [DllImport(Lib)] public static extern int StreamStyleUnity_AbiVersion();
        [DllImport(Lib)] public static extern IntPtr StreamStyleUnity_GetRenderEventFunc();
        [DllImport(Lib)] public static extern int StreamStyleUnity_FrameEventId();
        [DllImport(Lib)] public static extern int StreamStyleUnity_DeviceReady();
        [DllImport(Lib)] public static extern Status StreamStyleUnity_Attach(ref PluginAttachConfig config);
        [DllImport(Lib)] public static extern Status StreamStyleUnity_GetPlanes([In, Out] PluginPlane[] planes, uint capacity,
                                                                              out uint count);
        [DllImport(Lib)] public static extern Status StreamStyleUnity_GetStats(ref FramesStats stats);
        [DllImport(Lib)] public static extern Status StreamStyleUnity_Detach(uint timeoutMs);
        [DllImport(Lib)] public static extern IntPtr StreamStyleUnity_LastError();

        public static string LastError => Native.CString(StreamStyleUnity_LastError());
    }

    /// <summary>A ring of unmanaged frame records for IssuePluginEventAndData: the render thread reads a
    /// record after the main thread has moved on (Unity runs it a frame or two later), so each frame
    /// takes the next of `depth` records. Writing one allocates nothing.</summary>
    public sealed class PluginFrameRing : IDisposable
    {
        static readonly int Size = Marshal.SizeOf<PluginFrameData>();
        static readonly int OffFlags = (int)Marshal.OffsetOf<PluginFrameData>("flags");
        static readonly int OffPlanes = (int)Marshal.OffsetOf<PluginFrameData>("planes");
        static readonly int OffTarget = (int)Marshal.OffsetOf<PluginFrameData>("target");
        static readonly int OffInfo = (int)Marshal.OffsetOf<PluginFrameData>("info");
        static readonly int InfoSize = Marshal.SizeOf<FrameInfo>();
        static readonly int OffFields = OffInfo + (int)Marshal.OffsetOf<FrameInfo>("fields");
        static readonly int OffView = OffInfo + (int)Marshal.OffsetOf<FrameInfo>("view");
        static readonly int OffProj = OffInfo + (int)Marshal.OffsetOf<FrameInfo>("proj");
        static readonly int OffDt = OffInfo + (int)Marshal.OffsetOf<FrameInfo>("dt");
        static readonly int OffParams = OffInfo + (int)Marshal.OffsetOf<FrameInfo>("params");
        static readonly int OffStrength = OffParams + (int)Marshal.OffsetOf<Params>("strength");
        static readonly int OffSeed = OffParams + (int)Marshal.OffsetOf<Params>("seed");
        static readonly int MinusOne = BitConverter.ToInt32(BitConverter.GetBytes(-1f), 0);

        readonly IntPtr[] blocks;
        readonly float[] one = new float[1];
        int next;

        public PluginFrameRing(int depth = 4)
        {
            blocks = new IntPtr[depth];
            for (int i = 0; i < depth; i++)
            {
                blocks[i] = Marshal.AllocHGlobal(Size);
                for (int k = 0; k < Size; k++) Marshal.WriteByte(blocks[i], k, 0);
            }
        }

        /// <summary>The next record, filled: `planes` (native texture pointers, `planeCount` of them),
        /// `target`, and view/proj (row-major, 16 each) and dt when given. Returns its address.</summary>
        public IntPtr Write(PluginFrameFlags flags, IntPtr[] planes, int planeCount, IntPtr target, float[] view = null,
                            float[] proj = null, float dt = -1)
        {
            if (planeCount > PluginFrameData.MaxPlanes) throw new ArgumentException("too many planes");
            IntPtr p = blocks[next];
            next = (next + 1) % blocks.Length;
            var fields = FrameFields.None;
            Marshal.WriteInt32(p, 0, Size);
            Marshal.WriteInt32(p, OffFlags, (int)flags);
            for (int i = 0; i < PluginFrameData.MaxPlanes; i++)
                Marshal.WriteIntPtr(p, OffPlanes + i * IntPtr.Size, i < planeCount ? planes[i] : IntPtr.Zero);
            Marshal.WriteIntPtr(p, OffTarget, target);
            if (view != null) { Marshal.Copy(view, 0, p + OffView, 16); fields |= FrameFields.View; }
            if (proj != null) { Marshal.Copy(proj, 0, p + OffProj, 16); fields |= FrameFields.Proj; }
            if (dt >= 0) { one[0] = dt; Marshal.Copy(one, 0, p + OffDt, 1); fields |= FrameFields.Dt; }
            Marshal.WriteInt32(p, OffInfo, fields == FrameFields.None ? 0 : InfoSize); // size 0: no frame info
            Marshal.WriteInt32(p, OffFields, (int)fields);
            Marshal.WriteInt32(p, OffStrength, MinusOne); // params unset
            Marshal.WriteInt64(p, OffSeed, -1);
            return p;
        }

        public void Dispose()
        {
            for (int i = 0; i < blocks.Length; i++)
            {
                if (blocks[i] != IntPtr.Zero) Marshal.FreeHGlobal(blocks[i]);
                blocks[i] = IntPtr.Zero;
            }
        }
    }

    /// <summary>A StreamStyleSession attached to Unity's Vulkan device through the native plugin. Make it
    /// and Dispose it on the main thread (never the render thread); the session must outlive it.</summary>
    public sealed class StreamStyleUnityPlugin : IDisposable
    {
        bool attached;

        public static bool DeviceReady => UnityPluginNative.StreamStyleUnity_DeviceReady() == 1;
        public static IntPtr RenderEventFunc => UnityPluginNative.StreamStyleUnity_GetRenderEventFunc();
        public static int FrameEventId => UnityPluginNative.StreamStyleUnity_FrameEventId();

        /// <summary>The textures the camera must render, in the order PluginFrameRing.Write takes them.</summary>
        public PluginPlane[] Planes { get; }

        public StreamStyleUnityPlugin(StreamStyleSession session)
        {
            var o = session.Options;
            using (var ch = new NativeChannels(o.Channels))
            {
                var cfg = new PluginAttachConfig
                {
                    size = (uint)Marshal.SizeOf<PluginAttachConfig>(), session = session.Handle, backend = ch.S(o.Backend),
                    cuda_device = o.Device, width = (uint)o.Width, height = (uint)o.Height, channels = ch.Ptr,
                    channel_count = ch.Count, input_slot_bytes = o.InputSlotBytes, output_format = ch.S(o.OutputFormat)
                };
                var st = UnityPluginNative.StreamStyleUnity_Attach(ref cfg);
                if (st != Status.Ok) throw new StreamStyleException(st, "plugin", UnityPluginNative.LastError);
            }
            attached = true;
            var planes = new PluginPlane[PluginFrameData.MaxPlanes];
            for (int i = 0; i < planes.Length; i++) planes[i] = new PluginPlane { channel = new byte[32], format = new byte[16] };
            StreamStyleException.Check(UnityPluginNative.StreamStyleUnity_GetPlanes(planes, (uint)planes.Length, out uint n));
            Planes = new PluginPlane[n];
            Array.Copy(planes, Planes, (int)n);
        }

        public FramesStats Stats
        {
            get
            {
                var s = new FramesStats { size = (uint)Marshal.SizeOf<FramesStats>() };
                var st = UnityPluginNative.StreamStyleUnity_GetStats(ref s);
                if (st != Status.Ok) throw new StreamStyleException(st, "plugin", UnityPluginNative.LastError);
                return s;
            }
        }

        public void Dispose()
        {
            if (attached) UnityPluginNative.StreamStyleUnity_Detach(2000);
            attached = false;
        }
    }
}
