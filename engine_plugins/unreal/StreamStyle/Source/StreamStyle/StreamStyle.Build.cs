// StreamStyle.Build.cs: the runtime module links libstreamstyle (the C client) and the Vulkan bridge
// (libssvk_frames.a, the per-frame driver, over libssvk.a), both built with CMake from engine_plugins/c and engine_plugins/vulkan and copied into
// ThirdParty/ of this plugin (see ../../README.md). Not compiled here: no Unreal Engine on this machine.
using System.IO;
using UnrealBuildTool;

public class StreamStyle : ModuleRules
{
    public StreamStyle(ReadOnlyTargetRules Target) : base(Target)
    {
        PCHUsage = PCHUsageMode.UseExplicitOrSharedPCHs;
        PublicDependencyModuleNames.AddRange(new string[] { "Core", "CoreUObject", "Engine", "DeveloperSettings" });
        PrivateDependencyModuleNames.AddRange(new string[] {
            "RenderCore", "Renderer", "RHI", "RHICore", "Projects", "VulkanRHI"
        });
        // the private headers of the Vulkan RHI (IVulkanDynamicRHI) and the Vulkan headers UE ships
        AddEngineThirdPartyPrivateStaticDependencies(Target, "Vulkan");

        string ThirdParty = Path.Combine(PluginDirectory, "ThirdParty");
        PublicIncludePaths.Add(Path.Combine(ThirdParty, "include")); // streamstyle.h, streamstyle_contract.h, ssvk.h, ssvk_frames.h
        if (Target.Platform == UnrealTargetPlatform.Linux)
        {
            string Lib = Path.Combine(ThirdParty, "lib", "Linux");
            PublicAdditionalLibraries.Add(Path.Combine(Lib, "libssvk_frames.a"));
            PublicAdditionalLibraries.Add(Path.Combine(Lib, "libssvk.a"));
            PublicAdditionalLibraries.Add(Path.Combine(Lib, "libstreamstyle.so"));
            RuntimeDependencies.Add("$(BinaryOutputDir)/libstreamstyle.so.1", Path.Combine(Lib, "libstreamstyle.so.1"));
            PublicSystemLibraries.Add("dl");
        }
    }
}
