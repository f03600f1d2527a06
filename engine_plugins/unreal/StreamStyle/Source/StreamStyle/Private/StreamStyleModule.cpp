// StreamStyleModule.cpp: see StreamStyleModule.h.
#include "StreamStyleModule.h"

#include "IVulkanDynamicRHI.h"
#include "Interfaces/IPluginManager.h"
#include "Misc/CoreDelegates.h"
#include "SceneViewExtension.h"
#include "ShaderCore.h"
#include "StreamStyleViewExtension.h"

extern "C" {
#include "ssvk.h"
}

void FStreamStyleModule::StartupModule()
{
    // The engine's allocator does not export memory: the bridge allocates its own exportable buffers,
    // which needs these extensions on the engine's VkDevice, so they must be asked for before it exists.
    static const ANSICHAR* const Extensions[] = {SSVK_DEVICE_EXTENSIONS};
    IVulkanDynamicRHI::AddEnabledDeviceExtensionsAndLayers(MakeArrayView(Extensions), {});

    const FString Shaders = FPaths::Combine(IPluginManager::Get().FindPlugin(TEXT("StreamStyle"))->GetBaseDir(),
                                            TEXT("Shaders"));
    AddShaderSourceDirectoryMapping(TEXT("/Plugin/StreamStyle"), Shaders);

    PostEngineInit = FCoreDelegates::OnPostEngineInit.AddLambda([this]() {
        ViewExtension = FSceneViewExtensions::NewExtension<FStreamStyleViewExtension>();
    });
}

void FStreamStyleModule::ShutdownModule()
{
    FCoreDelegates::OnPostEngineInit.Remove(PostEngineInit);
    ViewExtension.Reset(); // closes the session and destroys the bridge (after a render-thread flush)
}

IMPLEMENT_MODULE(FStreamStyleModule, StreamStyle)
