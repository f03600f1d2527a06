// StreamStyleViewExtension.cpp: see StreamStyleViewExtension.h. Written against Unreal Engine 5.3's
// APIs (scene view extensions, RDG, IVulkanDynamicRHI) without an engine to compile it: treat it as the
// shape of the glue, to be compiled and fixed in a UE project (docs/engines.md says so).
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
#include "ssvk.h"
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
        ssvk_bridge* B = nullptr;
        ssvk_cuda* Cu = nullptr;
        ss_session_config SC = {sizeof SC};
        ssvk_config BC = {sizeof BC};
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
        BC.physical = Vk->RHIGetVkPhysicalDevice();
        BC.device = Vk->RHIGetVkDevice();
        BC.width = NewSize.X;
        BC.height = NewSize.Y;
        BC.channels = Channels;
        BC.channel_count = 8;
        BC.input_slot_bytes = SlotBytes;
        BC.require_semaphore_export = 1;
        if (ss_client_create(&CC, &C) != SS_OK || ss_session_open(C, &SC, &S) != SS_OK ||
            ssvk_create(&BC, &B) != VK_SUCCESS || ssvk_cuda_open(B, Settings->CudaDevice, &Cu) != SS_OK)
        {
            UE_LOG(LogTemp, Warning, TEXT("StreamStyle: not stylizing (%s / %s): the game shows its own frames"),
                   UTF8_TO_TCHAR(ss_last_error_message()), UTF8_TO_TCHAR(ssvk_last_error()));
            if (Cu) ssvk_cuda_close(Cu);
            if (B) ssvk_destroy(B);
            if (S) ss_session_close(S);
            if (C) ss_client_destroy(C);
        }
        else
        {
            FScopeLock Guard(&Lock);
            Client = C; Session = S; Bridge = B; Cuda = Cu;
            // Stream: the CUDA runtime's default stream of the primary context (NULL) until the module
            // creates its own non-blocking stream; the bridge and libstreamstyle share that context.
            Stream = nullptr;
            InputCount = OutputCount = 0;
        }
        Size = NewSize;
        Opening = false;
    });
}

// A command buffer from a pool of our own, reset per use (one frame in flight at a time: the
// composited/consumed semaphores keep the bridge's buffers safe; the pool's reuse is paced by the RHI).
VkCommandBuffer FStreamStyleViewExtension::BeginOwnCommandBuffer()
{
    IVulkanDynamicRHI* Vk = GetIVulkanDynamicRHI();
    VkDevice Dev = Vk->RHIGetVkDevice();
    if (!Pool)
    {
        VkCommandPoolCreateInfo Ci = {VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
        Ci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
        Ci.queueFamilyIndex = Vk->RHIGetGraphicsQueueFamilyIndex();
        vkCreateCommandPool(Dev, &Ci, nullptr, &Pool);
        VkCommandBufferAllocateInfo Ai = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
        Ai.commandPool = Pool;
        Ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
        Ai.commandBufferCount = UE_ARRAY_COUNT(Cmds);
        vkAllocateCommandBuffers(Dev, &Ai, Cmds);
    }
    VkCommandBuffer Cmd = Cmds[NextCmd++ % UE_ARRAY_COUNT(Cmds)];
    VkCommandBufferBeginInfo Bi = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    Bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    vkResetCommandBuffer(Cmd, 0);
    vkBeginCommandBuffer(Cmd, &Bi);
    return Cmd;
}

void FStreamStyleViewExtension::CloseNow()
{
    FScopeLock Guard(&Lock);
    if (Cuda) ssvk_cuda_close(Cuda);
    if (Bridge) ssvk_destroy(Bridge);
    if (Session) ss_session_close(Session);
    if (Client) ss_client_destroy(Client);
    Cuda = nullptr; Bridge = nullptr; Session = nullptr; Client = nullptr;
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
    if (!Session || !Bridge || !Cuda) return;

    ssvk_info Info;
    ssvk_get_info(Bridge, &Info);
    ss_slot Slot;
    if (ss_acquire(Session, Stream, &Slot) == SS_OK)
    {
        // 1. pack (StreamStylePack.usf, one compute dispatch) into Packed[plane], in the planes'
        //    formats, from Inputs.SceneTextures (SceneColor, SceneDepth, GBufferA/B/C, Velocity).
        // 2. the bridge's copies and rendered = n, on a command buffer of our own submitted to the
        //    graphics queue once the RHI has submitted the pack pass (the immediate flush below; a
        //    production plugin drops that flush where the engine version lets a plugin add semaphore
        //    waits and signals to the RHI's own submits).
        const uint64 N = ++InputCount;
        FRHICommandListImmediate& RHICmdList = GraphBuilder.RHICmdList;
        RHICmdList.ImmediateFlush(EImmediateFlushType::FlushRHIThread);
        RHICmdList.EnqueueLambda([this, Info, N, Slot](FRHICommandListImmediate&) {
            IVulkanDynamicRHI* Vk = GetIVulkanDynamicRHI();
            VkCommandBuffer Cmd = BeginOwnCommandBuffer();
            for (uint32 i = 0; i < Info.plane_count; i++)
                ssvk_record_input(Bridge, Cmd, i, Vk->RHIGetVkImage(Packed[i]->GetRHI()), VK_IMAGE_LAYOUT_GENERAL);
            vkEndCommandBuffer(Cmd);
            ssvk_submit_input(Bridge, Vk->RHIGetGraphicsVkQueue(), Cmd, N, VK_NULL_HANDLE);
            ssvk_cuda_copy_in(Cuda, Stream, N, (uint64)(uintptr_t)Slot.input); // CUDA waits for rendered = N
            ss_submit(Session, Slot.index, nullptr, Stream, nullptr);
        });
    }

    ss_event Ev;
    while (ss_poll(Session, &Ev) == SS_OK)
    {
        if (Ev.kind != SS_EVENT_DONE) continue; // late, refused, lost: the raw frame stays on screen
        const void* Out = nullptr;
        if (ss_output(Session, (uint32)Ev.slot, Stream, &Out, nullptr) != SS_OK) continue;
        const uint64 M = ++OutputCount;
        ssvk_cuda_copy_out(Cuda, Stream, M, (uint64)(uintptr_t)Out);
        // The composite: copy into the view's scene colour on our own command buffer, waiting on the
        // GPU for stylized = M. The RHI's later passes read scene colour after the flush above.
        FRHITexture* Target = (*Inputs.SceneTextures)->SceneColorTexture->GetRHI();
        GraphBuilder.RHICmdList.EnqueueLambda([this, M, Target](FRHICommandListImmediate&) {
            IVulkanDynamicRHI* Vk = GetIVulkanDynamicRHI();
            VkCommandBuffer Cmd = BeginOwnCommandBuffer();
            ssvk_record_output(Bridge, Cmd, Vk->RHIGetVkImage(Target), VK_IMAGE_LAYOUT_GENERAL);
            vkEndCommandBuffer(Cmd);
            ssvk_submit_output(Bridge, Vk->RHIGetGraphicsVkQueue(), Cmd, M, VK_NULL_HANDLE);
        });
    }
}
