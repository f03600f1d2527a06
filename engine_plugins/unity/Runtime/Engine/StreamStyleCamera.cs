// StreamStyleCamera.cs: the camera component of the built-in deferred pipeline (Vulkan): it opens a
// session off the main thread, attaches it to the native plugin, and each frame packs the camera's
// colour, depth, normals, albedo, roughness/metallic and motion vectors into the plugin's planes
// (Shaders/StreamStylePack.shader), issues the plugin's render event (send this frame, composite the
// newest stylized one into `Stylized`) and shows the stylized frame while it is recent, else the raw one.
//
// NOT COMPILED HERE: there is no Unity on this project's machines. Everything it calls below the UnityEngine
// API is tested (the C# layer under mono, the native plugin driven by a harness that plays Unity over a
// real Vulkan device: docs/engines.md, "What was compiled and tested where"). To check in a Unity project:
// the planes' orientation (UNITY_UV_STARTS_AT_TOP in the pack shader), the motion vectors' sign, the
// GraphicsFormat of each plane matching the plugin's VkFormat, and that the plugin is set to load on
// startup (its device interception needs it).
using System;
using System.Threading.Tasks;
using UnityEngine;
using UnityEngine.Experimental.Rendering;
using UnityEngine.Rendering;

namespace StreamStyle
{
    [RequireComponent(typeof(Camera))]
    public sealed class StreamStyleCamera : MonoBehaviour
    {
        [Tooltip("The service's address: ipc:///path on Linux, tcp://127.0.0.1:PORT elsewhere")]
        public string Address = "ipc:///tmp/streamstyle.sock";
        public string Prompt = "watercolor";
        [Range(1, 4)] public int Steps = 2;
        [Range(0, 1)] public float Strength = 0.8f;
        [Tooltip("cuda-ipc on a machine with the service's NVIDIA GPU; shm elsewhere (slow: a CPU copy)")]
        public string Backend = "cuda-ipc";
        public int CudaDevice = 0;
        [Tooltip("Shows the stylized frame only when it is at most this many frames behind the sent one")]
        public int MaxLagFrames = 2;
        public Shader PackShader;

        /// <summary>The newest stylized frame (rgba8), while a session is attached.</summary>
        public RenderTexture Stylized { get; private set; }

        static readonly string[] PlaneOrder = { "color", "depth", "normals", "albedo", "roughness", "motion", "ids" };

        Camera cam;
        StreamStyleClient client;
        StreamStyleSession session;
        StreamStyleUnityPlugin plugin;
        Task<StreamStyleSession> opening;
        RenderTexture[] planes;
        RenderTargetIdentifier[] planeIds;
        IntPtr[] planePtrs;
        PluginFrameRing ring;
        CommandBuffer cmd;
        Material pack;
        int width, height;
        readonly float[] view = new float[16], proj = new float[16];

        void OnEnable()
        {
            cam = GetComponent<Camera>();
            cam.depthTextureMode |= DepthTextureMode.Depth | DepthTextureMode.MotionVectors;
            width = cam.pixelWidth;
            height = cam.pixelHeight;
            var o = ReferenceLayout(width, height);
            string address = Address;
            opening = Task.Run(() => // control calls wait for the service: never on the main thread
            {
                client = new StreamStyleClient(address, "unity");
                return client.Open(o);
            });
        }

        SessionOptions ReferenceLayout(int w, int h)
        {
            var spec = new[] { ("color", "rgba16f", "linear_hdr", 8), ("depth", "r32f", "linear", 4),
                               ("normals", "rgba16f", "signed", 8), ("albedo", "rgba8_unorm", "unit", 4),
                               ("roughness", "rg8_unorm", "unit", 2), ("motion", "rg16f", "pixels", 4),
                               ("ids", "r32_uint", "uint", 4) };
            var ch = new System.Collections.Generic.List<ChannelDesc>();
            ulong offset = 0;
            foreach (var (name, fmt, enc, bytes) in spec)
            {
                ch.Add(new ChannelDesc(name, fmt, offset, enc));
                if (name == "roughness") ch.Add(new ChannelDesc("metallic", fmt, offset, "unit", 1));
                offset = (offset + (ulong)(w * h * bytes) + 255) / 256 * 256;
            }
            var p = Params.Unset;
            p.steps = Steps;
            p.strength = Strength;
            return new SessionOptions { Width = w, Height = h, Channels = ch.ToArray(), InputSlotBytes = offset,
                                        Backend = Backend, Device = CudaDevice, Prompt = Prompt, Params = p };
        }

        static GraphicsFormat FormatOf(string contract)
        {
            switch (contract)
            {
                case "rgba16f": return GraphicsFormat.R16G16B16A16_SFloat;
                case "r32f": return GraphicsFormat.R32_SFloat;
                case "rgba8_unorm": return GraphicsFormat.R8G8B8A8_UNorm;
                case "rg8_unorm": return GraphicsFormat.R8G8_UNorm;
                case "rg16f": return GraphicsFormat.R16G16_SFloat;
                case "r32_uint": return GraphicsFormat.R32_UInt;
                default: throw new ArgumentException($"no Unity format for the contract's {contract}");
            }
        }

        void Attach()
        {
            session = opening.Result;
            plugin = new StreamStyleUnityPlugin(session);
            if (plugin.Planes.Length != PlaneOrder.Length) throw new InvalidOperationException("unexpected planes");
            planes = new RenderTexture[PlaneOrder.Length];
            planeIds = new RenderTargetIdentifier[PlaneOrder.Length];
            planePtrs = new IntPtr[PlaneOrder.Length];
            for (int i = 0; i < PlaneOrder.Length; i++)
            {
                if (plugin.Planes[i].Channel != PlaneOrder[i])
                    throw new InvalidOperationException($"plane {i} is {plugin.Planes[i].Channel}, not {PlaneOrder[i]}");
                planes[i] = new RenderTexture(width, height, 0, FormatOf(plugin.Planes[i].Format)) { name = PlaneOrder[i] };
                planes[i].Create();
                planeIds[i] = planes[i];
                planePtrs[i] = planes[i].GetNativeTexturePtr();
            }
            Stylized = new RenderTexture(width, height, 0, GraphicsFormat.R8G8B8A8_UNorm) { name = "StreamStyle" };
            Stylized.Create();
            ring = new PluginFrameRing(4);
            pack = new Material(PackShader);
            pack.SetVector("_StreamStyleSize", new Vector4(width, height, 0, 0));
            cmd = new CommandBuffer { name = "StreamStyle" };
            cam.AddCommandBuffer(CameraEvent.BeforeImageEffects, cmd);
        }

        static void RowMajor(Matrix4x4 m, float[] out16)
        {
            for (int r = 0; r < 4; r++)
                for (int c = 0; c < 4; c++)
                    out16[r * 4 + c] = m[r, c];
        }

        void OnPreRender()
        {
            if (plugin == null)
            {
                if (opening == null || !opening.IsCompleted || !StreamStyleUnityPlugin.DeviceReady) return;
                if (opening.IsFaulted) { Debug.LogWarning($"StreamStyle: {opening.Exception?.InnerException?.Message}"); opening = null; return; }
                try { Attach(); }
                catch (StreamStyleException e) { Debug.LogWarning($"StreamStyle: not stylizing ({e.Message})"); opening = null; return; }
            }
            RowMajor(cam.worldToCameraMatrix, view);
            RowMajor(GL.GetGPUProjectionMatrix(cam.projectionMatrix, true), proj);
            cmd.Clear();
            int color = Shader.PropertyToID("_StreamStyleColor");
            cmd.GetTemporaryRT(color, width, height, 0, FilterMode.Point, GraphicsFormat.R16G16B16A16_SFloat);
            cmd.Blit(BuiltinRenderTextureType.CameraTarget, color);
            cmd.SetRenderTarget(planeIds, BuiltinRenderTextureType.None);
            cmd.DrawProcedural(Matrix4x4.identity, pack, 0, MeshTopology.Triangles, 3);
            cmd.ReleaseTemporaryRT(color);
            IntPtr data = ring.Write(PluginFrameFlags.Send | PluginFrameFlags.Composite, planePtrs, planePtrs.Length,
                                     Stylized.GetNativeTexturePtr(), view, proj, Time.deltaTime);
            cmd.IssuePluginEventAndData(StreamStyleUnityPlugin.RenderEventFunc, StreamStyleUnityPlugin.FrameEventId, data);
        }

        void OnRenderImage(RenderTexture src, RenderTexture dst)
        {
            bool fresh = false;
            if (plugin != null)
            {
                var s = plugin.Stats;
                fresh = s.live != 0 && s.composited > 0 && s.last_composited_seq + (ulong)MaxLagFrames >= s.last_sent_seq;
            }
            Graphics.Blit(fresh ? Stylized : src, dst); // the game's own frame whenever the service is late or gone
        }

        void OnDisable()
        {
            if (cmd != null) cam.RemoveCommandBuffer(CameraEvent.BeforeImageEffects, cmd);
            plugin?.Dispose();
            session?.Dispose();
            client?.Dispose();
            ring?.Dispose();
            if (planes != null) foreach (var rt in planes) rt.Release();
            Stylized?.Release();
            plugin = null; session = null; client = null; ring = null; planes = null; Stylized = null; cmd = null;
        }
    }
}
