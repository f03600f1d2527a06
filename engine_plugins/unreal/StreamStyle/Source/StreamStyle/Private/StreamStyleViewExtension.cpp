// StreamStyleViewExtension.cpp: see StreamStyleViewExtension.h. Written against Unreal Engine 5.3's
// APIs (scene view extensions, RDG, IVulkanDynamicRHI) without an engine to compile it: treat it as the
// shape of the glue, to be compiled and fixed in a UE project (docs/engines.md says so). Below the engine
// API it calls only libstreamstyle's control calls and the Vulkan bridge's per-frame driver
// (ssvk_frames.h), the same functions Unity's native plugin calls; both are tested.
#include "StreamStyleViewExtension.h"

#include "Async/Async.h"
#include "HAL/IConsoleManager.h"
#include "IVulkanDynamicRHI.h"
#include "PostProcess/PostProcessing.h"
#include "RenderGraphBuilder.h"
#include "RenderGraphUtils.h"
#include "SceneRendering.h"
#include "ScreenPass.h"
#include "StreamStyleSettings.h"

extern "C" {
#include "ssvk_frames.h"
#include "streamstyle.h"
}

static TAutoConsoleVariable<int32> CVarEnable(TEXT("r.StreamStyle.Enable"), 1, TEXT("Stylize the view (0: off)."),
                                              ECVF_RenderThreadSafe);
static TAutoConsoleVariable<FString> CVarPrompt(TEXT("r.StreamStyle.Prompt"), TEXT(""),
                                                TEXT("Style prompt; empty: the project setting."));
static TAutoConsoleVariable<int32> CVarSteps(TEXT("r.StreamStyle.Steps"), 0, TEXT("Steps 1..4; 0: the project setting."));
static TAutoConsoleVariable<float> CVarStrength(TEXT("r.StreamStyle.Strength"), -1.0f,
                                                TEXT("Strength 0..1; < 0: the project setting."));

// The contract's reference layout (docs/gbuffer-layout.md), as the pack pass writes it.
static const ss_channel* LayoutFor(FIntPoint S, uint64* SlotBytes)
{
    static ss_channel Ch[8];
    static const struct { const char *Name, *Format, *Encoding; uint32 Bytes, First; } Spec[8] = {
        {"color", "rgba16f", "linear_hdr", 8, 0}, {"depth", "r32f", "linear", 4, 0},
        {"normals", "rgba16f", "signed", 8, 0},   {"albedo", "rgba8_unorm", "unit", 4, 0},
        {"roughness", "rg8_unorm", "unit", 2, 0}, {"metallic", "rg8_unorm", "unit", 2, 1},
        {"motion", "rg16f", "pixels", 4, 0},      {"ids", "r32_uint", "uint", 4, 0}};
    uint64 Offset = 0, Last = 0;
    for (int i = 0; i < 8; i++)
    {
        FMemory::Memzero(Ch[i]);
        Ch[i].name = Spec[i].Name;
        Ch[i].format = Spec[i].Format;
        Ch[i].encoding = Spec[i].Encoding;
        Ch[i].first = Spec[i].First;
        if (Spec[i].First) { Ch[i].offset = Last; continue; }
        Ch[i].offset = Last = Offset;
        Offset = (Offset + uint64(S.X) * S.Y * Spec[i].Bytes + 255) / 256 * 256;
    }
    *SlotBytes = Offset;
    return Ch;
}

FStreamStyleViewExtension::FStreamStyleViewExtension(const FAutoRegister& AutoRegister)
    : FSceneViewExtensionBase(AutoRegister) {}

FStreamStyleViewExtension::~FStreamStyleViewExtension() { CloseNow(); }

void FStreamStyleViewExtension::BeginRenderViewFamily(FSceneViewFamily& Family)
{
    const FIntPoint Want(Family.RenderTarget->GetSizeXY());
    if (CVarEnable.GetValueOnGameThread() && Want != Size && !Opening) OpenAsync(Want);
    const UStreamStyleSettings* Settings = GetDefault<UStreamStyleSettings>();
    const FString Prompt = CVarPrompt.GetValueOnGameThread().IsEmpty() ? Settings->Prompt : CVarPrompt.GetValueOnGameThread();
    if (Session && Prompt != LastPrompt) // a control call: off the game thread, blended over 8 frames
    {
        LastPrompt = Prompt;
        ss_session* S = Session;
        AsyncTask(ENamedThreads::AnyBackgroundThreadNormalTask,
                  [S, P = FString(Prompt)]() { ss_set_prompt(S, TCHAR_TO_UTF8(*P), 8); });
    }
    const int32 Steps = CVarSteps.GetValueOnGameThread() > 0 ? CVarSteps.GetValueOnGameThread() : Settings->Steps;
    const float Strength = CVarStrength.GetValueOnGameThread() >= 0 ? CVarStrength.GetValueOnGameThread() : Settings->Strength;
    if (Session && (Steps != LastSteps || Strength != LastStrength))
    {
        LastSteps = Steps;
        LastStrength = Strength;
        ss_params Params;
        ss_params_init(&Params);
        Params.steps = FMath::Clamp(Steps, 1, 4);
        Params.strength = FMath::Clamp(Strength, 0.0f, 1.0f);
        ss_session* S = Session;
        AsyncTask(ENamedThreads::AnyBackgroundThreadNormalTask, [S, Params]() { ss_set_params(S, &Params); });
    }
}

void FStreamStyleViewExtension::OpenAsync(FIntPoint NewSize)
{
    Opening = true;
    FlushRenderingCommands(); // the render thread no longer uses the old session or bridge
    CloseNow();
    AsyncTask(ENamedThreads::AnyBackgroundThreadNormalTask, [this, NewSize]() {
        const UStreamStyleSettings* Settings = GetDefault<UStreamStyleSettings>();
        IVulkanDynamicRHI* Vk = GetIVulkanDynamicRHI();
        uint64 SlotBytes = 0;
        const ss_channel* Channels = LayoutFor(NewSize, &SlotBytes);
        ss_client_config CC = {sizeof CC};
        FTCHARToUTF8 Address(*Settings->Address), Prompt(*Settings->Prompt);
        CC.address = Address.Get();
        CC.name = "unreal";
        ss_client* C = nullptr;
        ss_session* S = nullptr;
        ssvk_frames* F = nullptr;
        ss_session_config SC = {sizeof SC};
        ssvk_frames_config FC = {sizeof FC};
        SC.width = NewSize.X;
        SC.height = NewSize.Y;
        SC.channels = Channels;
        SC.channel_count = 8;
        SC.input_slot_bytes = SlotBytes;
        SC.backend = SS_BACKEND_CUDA_IPC;
        SC.device = Settings->CudaDevice;
        SC.prompt = Prompt.Get();
        ss_params_init(&SC.params);
        SC.params.steps = Settings->Steps;
        SC.params.strength = Settings->Strength;
        SC.params.deadline_ms = Settings->DeadlineMs;
        FC.backend = SS_BACKEND_CUDA_IPC;
        FC.cuda_device = Settings->CudaDevice;
        FC.physical = Vk->RHIGetVkPhysicalDevice();
        FC.device = Vk->RHIGetVkDevice();
        FC.queue = Vk->RHIGetGraphicsVkQueue();
        FC.queue_family = Vk->RHIGetGraphicsQueueFamilyIndex();
        FC.width = NewSize.X;
        FC.height = NewSize.Y;
        FC.channels = Channels;
        FC.channel_count = 8;
        FC.input_slot_bytes = SlotBytes;
        FC.output_format = SS_FORMAT_RGBA16F; // composited into scene colour (rgba16f)
        SC.output_format = SS_FORMAT_RGBA16F;
        bool Ok = ss_client_create(&CC, &C) == SS_OK && ss_session_open(C, &SC, &S) == SS_OK;
        if (Ok)
        {
            FC.session = S;
            Ok = ssvk_frames_create(&FC, &F) == SS_OK;
        }
        if (!Ok)
        {
            UE_LOG(LogTemp, Warning, TEXT("StreamStyle: not stylizing (%s / %s): the game shows its own frames"),
                   UTF8_TO_TCHAR(ss_last_error_message()), UTF8_TO_TCHAR(ssvk_last_error()));
            if (S) ss_session_close(S);
            if (C) ss_client_destroy(C);
        }
        else
        {
            FScopeLock Guard(&Lock);
            Client = C; Session = S; Frames = F;
        }
        Size = NewSize;
        Opening = false;
    });
}

void FStreamStyleViewExtension::CloseNow()
{
    FScopeLock Guard(&Lock);
    if (Frames) ssvk_frames_destroy(Frames, 2000); // waits for the GPU's copies (after FlushRenderingCommands)
    if (Session) ss_session_close(Session);
    if (Client) ss_client_destroy(Client);
    Frames = nullptr; Session = nullptr; Client = nullptr;
    Packed.Reset();
}

void FStreamStyleViewExtension::PrePostProcessPass_RenderThread(FRDGBuilder& GraphBuilder, const FSceneView& View,
                                                                const FPostProcessingInputs& Inputs)
{
    if (!CVarEnable.GetValueOnRenderThread() || !Lock.TryLock()) return; // the opener holds it: raw frame
    ON_SCOPE_EXIT { Lock.Unlock(); };
    // TODO(when a UE 5.3 project builds this): the bridge's plane formats equal the scene colour's
    // (rgba16f for the rgba16f output) and Packed[] is allocated from the pool at Size; both are
    // assumed here.
    if (!Session || !Frames) return;

    // 1. pack (StreamStylePack.usf, one compute dispatch) into Packed[plane], in the planes' formats, from
    //    Inputs.SceneTextures (SceneColor, SceneDepth, GBufferA/B/C, Velocity).
    // 2. on the RHI thread once the RHI has submitted the pack pass (the immediate flush below; a
    //    production plugin drops that flush where the engine version lets a plugin add semaphore waits
    //    and signals to the RHI's own submits): the shared per-frame driver, as Unity's plugin runs it.
    //    It composites the newest stylized frame into scene colour behind a GPU-side wait and sends
    //    this frame's planes when a slot is free; a late, refused or lost frame leaves the raw frame.
    FRHITexture* Target = (*Inputs.SceneTextures)->SceneColorTexture->GetRHI();
    FRHICommandListImmediate& RHICmdList = GraphBuilder.RHICmdList;
    RHICmdList.ImmediateFlush(EImmediateFlushType::FlushRHIThread);
    RHICmdList.EnqueueLambda([this, Target](FRHICommandListImmediate&) {
        IVulkanDynamicRHI* Vk = GetIVulkanDynamicRHI();
        VkImage Planes[SSVK_MAX_PLANES] = {};
        for (int32 i = 0; i < Packed.Num() && i < SSVK_MAX_PLANES; i++) Planes[i] = Vk->RHIGetVkImage(Packed[i]->GetRHI());
        ssvk_frame Frame = {sizeof Frame};
        Frame.planes = Planes;
        Frame.planes_layout = VK_IMAGE_LAYOUT_GENERAL;
        Frame.target = Vk->RHIGetVkImage(Target);
        Frame.target_layout = VK_IMAGE_LAYOUT_GENERAL;
        if (ssvk_frames_run(Frames, &Frame) != SS_OK)
            UE_LOG(LogTemp, Warning, TEXT("StreamStyle: %s"), UTF8_TO_TCHAR(ssvk_last_error()));
    });
}
