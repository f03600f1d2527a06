// StreamStyleViewExtension.h: the per-frame glue, thin over libstreamstyle (the session, its cuda-ipc
// ring) and the Vulkan bridge's per-frame driver (ssvk_frames.h: exportable buffers, CUDA copies,
// GPU-side semaphore waits, events), the same driver Unity's native plugin runs.
//
// Render thread, before post-processing, each frame:
//   1. a pack pass (Shaders/Private/StreamStylePack.usf) converts scene colour, depth, GBuffer A/B/C
//      and velocity into the contract's formats and encodings (docs/gbuffer-layout.md): Unreal's
//      GBufferA is 10:10:10:2 unorm normals, its depth is device Z, its velocity is encoded; the
//      contract wants rgba16f signed normals, linear r32f depth and rg16f motion in pixels;
//   2. ssvk_frames_run on the RHI thread: the newest stylized frame composited into scene colour
//      behind a GPU-side wait; the packed planes copied into the bridge, then (CUDA, on the bridge's
//      stream) into a free ring slot and sent. LATE, ERROR, SERVICE_LOST: the raw frame stays on
//      screen. Nothing here waits on the host.
// Game thread: the client and session are opened and reopened on a background task (control calls
// wait for the service), never on the render thread.
#pragma once

#include "CoreMinimal.h"
#include "SceneViewExtension.h"
#include "IVulkanDynamicRHI.h" // Vulkan types for ssvk_frames.h

struct ss_client;
struct ss_session;
struct ssvk_frames;

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
    void OpenAsync(FIntPoint Size);   // game thread: a background task opens client, session, driver
    void CloseNow();                  // after FlushRenderingCommands

    FCriticalSection Lock;            // guards the handles below between the opener task and the render thread
    ss_client* Client = nullptr;
    ss_session* Session = nullptr;
    ssvk_frames* Frames = nullptr;    // the bridge, its CUDA half and stream, the command buffers
    FIntPoint Size = FIntPoint::ZeroValue;
    TAtomic<bool> Opening{false};
    TArray<TRefCountPtr<IPooledRenderTarget>> Packed; // one per bridge plane, in the plane's format
    FString LastPrompt;
    int32 LastSteps = 0;
    float LastStrength = -1.0f;
};
