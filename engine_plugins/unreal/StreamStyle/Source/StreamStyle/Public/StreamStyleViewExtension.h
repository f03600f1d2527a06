// StreamStyleViewExtension.h: the per-frame glue, thin over libstreamstyle (the session, its cuda-ipc
// ring, events) and the Vulkan bridge (exportable buffers, CUDA copies, GPU-side semaphore waits).
//
// Render thread, before post-processing, each frame:
//   1. a pack pass (Shaders/Private/StreamStylePack.usf) converts scene colour, depth, GBuffer A/B/C
//      and velocity into the contract's formats and encodings (docs/gbuffer-layout.md): Unreal's
//      GBufferA is 10:10:10:2 unorm normals, its depth is device Z, its velocity is encoded; the
//      contract wants rgba16f signed normals, linear r32f depth and rg16f motion in pixels;
//   2. if ss_acquire gives a slot: the bridge's copies of the packed targets, submitted with
//      rendered = n on a command buffer of the plugin's own; on the CUDA stream the semaphore wait,
//      the plane copies, ss_submit (ready);
//   3. every DONE polled: ss_output, the CUDA copy out and stylized = m, and the composite copy into
//      the view's output, waiting on the GPU for stylized = m. LATE, ERROR, SERVICE_LOST: the raw
//      frame stays on screen (the extension does nothing). Nothing here waits on the host.
// Game thread: the client and session are opened and reopened on a background task (control calls
// wait for the service), never on the render thread.
#pragma once

#include "CoreMinimal.h"
#include "SceneViewExtension.h"
#include "IVulkanDynamicRHI.h" // VkCommandBuffer, VkCommandPool

struct ss_client;
struct ss_session;
struct ssvk_bridge;
struct ssvk_cuda;

class FStreamStyleViewExtension : public FSceneViewExtensionBase
{
public:
    FStreamStyleViewExtension(const FAutoRegister& AutoRegister);
    virtual ~FStreamStyleViewExtension();

    virtual void SetupViewFamily(FSceneViewFamily& InViewFamily) override {}
    virtual void SetupView(FSceneViewFamily& InViewFamily, FSceneView& InView) override {}
    virtual void BeginRenderViewFamily(FSceneViewFamily& InViewFamily) override;
    virtual void PrePostProcessPass_RenderThread(FRDGBuilder& GraphBuilder, const FSceneView& View,
                                                 const FPostProcessingInputs& Inputs) override;

private:
    void OpenAsync(FIntPoint Size);   // game thread: a background task opens client, session, bridge
    void CloseNow();                  // after FlushRenderingCommands
    VkCommandBuffer BeginOwnCommandBuffer(); // RHI thread

    FCriticalSection Lock;            // guards the handles below between the opener task and the render thread
    ss_client* Client = nullptr;
    ss_session* Session = nullptr;
    ssvk_bridge* Bridge = nullptr;
    ssvk_cuda* Cuda = nullptr;
    void* Stream = nullptr;           // a CUstream of the bridge's context
    FIntPoint Size = FIntPoint::ZeroValue;
    TAtomic<bool> Opening{false};
    uint64 InputCount = 0, OutputCount = 0;
    TArray<TRefCountPtr<IPooledRenderTarget>> Packed; // one per bridge plane, in the plane's format
    FString LastPrompt;
    int32 LastSteps = 0;
    float LastStrength = -1.0f;
    VkCommandPool Pool = VK_NULL_HANDLE;
    VkCommandBuffer Cmds[8] = {};
    uint32 NextCmd = 0;
};
