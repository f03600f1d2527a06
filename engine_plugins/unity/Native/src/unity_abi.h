/* unity_abi.h: the part of Unity's native plugin interface this plugin uses, declared here from its
 * public binary interface. Unity's own headers (IUnityInterface.h, IUnityGraphics.h,
 * IUnityGraphicsVulkan.h, under the Unity Companion License) are not in this repository and were not
 * copied: every type below is written from the ABI as public bindings document it (the interface
 * GUIDs, the order of each interface's function table, the structs' field order), and only the
 * members this plugin calls or reads are named; the rest of each table is kept as opaque slots so
 * that the offsets stay right. Checked against: the bindgen output of unity-native-plugin-sys
 * (crates.io, whose layout assertions give IUnityGraphicsVulkanV2 16 pointers, AddInterceptInitialization
 * at byte 112; UnityVulkanImage 160 bytes, image at 72) and a C# binding of the same interfaces.
 * tests/unity_host.c implements these interfaces over a real Vulkan device to drive the plugin.
 *
 * On x86-64 Linux and macOS UNITY_INTERFACE_API is the platform's C convention; on 32-bit Windows it
 * is __stdcall. */
#ifndef SSU_UNITY_ABI_H
#define SSU_UNITY_ABI_H

#include <stdbool.h>
#include <stdint.h>
#include <vulkan/vulkan.h>

#if defined(_WIN32) && !defined(_WIN64)
#define UNITY_API __stdcall
#else
#define UNITY_API
#endif
#if defined(_WIN32)
#define UNITY_EXPORT __declspec(dllexport)
#else
#define UNITY_EXPORT __attribute__((visibility("default")))
#endif

/* IUnityInterface.h */
typedef struct UnityInterfaceGUID {
    unsigned long long high, low;
} UnityInterfaceGUID;
typedef struct IUnityInterface IUnityInterface;
typedef struct IUnityInterfaces {
    IUnityInterface *(UNITY_API *GetInterface)(UnityInterfaceGUID guid);
    void(UNITY_API *RegisterInterface)(UnityInterfaceGUID guid, IUnityInterface *ptr);
    IUnityInterface *(UNITY_API *GetInterfaceSplit)(unsigned long long high, unsigned long long low);
    void(UNITY_API *RegisterInterfaceSplit)(unsigned long long high, unsigned long long low, IUnityInterface *ptr);
} IUnityInterfaces;

/* IUnityGraphics.h */
#define SSU_GUID_IUNITYGRAPHICS 0x7CBA0A9CA4DDB544ULL, 0x8C5AD4926EB17B11ULL
enum { kUnityGfxRendererVulkan = 21 };
typedef enum UnityGfxDeviceEventType {
    kUnityGfxDeviceEventInitialize = 0,
    kUnityGfxDeviceEventShutdown = 1,
    kUnityGfxDeviceEventBeforeReset = 2,
    kUnityGfxDeviceEventAfterReset = 3
} UnityGfxDeviceEventType;
typedef void(UNITY_API *IUnityGraphicsDeviceEventCallback)(UnityGfxDeviceEventType eventType);
typedef void(UNITY_API *UnityRenderingEvent)(int eventId);
typedef void(UNITY_API *UnityRenderingEventAndData)(int eventId, void *data);
typedef struct IUnityGraphics {
    int(UNITY_API *GetRenderer)(void); /* UnityGfxRenderer */
    void(UNITY_API *RegisterDeviceEventCallback)(IUnityGraphicsDeviceEventCallback callback);
    void(UNITY_API *UnregisterDeviceEventCallback)(IUnityGraphicsDeviceEventCallback callback);
    int(UNITY_API *ReserveEventIDRange)(int count);
} IUnityGraphics;

/* IUnityGraphicsVulkan.h */
#define SSU_GUID_IUNITYGRAPHICSVULKANV2 0x329334C09DCA4787ULL, 0xB347DD92A0097FFCULL

typedef struct UnityVulkanInstance {
    VkPipelineCache pipelineCache;
    VkInstance instance;
    VkPhysicalDevice physicalDevice;
    VkDevice device;
    VkQueue graphicsQueue;
    PFN_vkGetInstanceProcAddr getInstanceProcAddr;
    unsigned int queueFamilyIndex;
    void *reserved[8];
} UnityVulkanInstance;

typedef struct UnityVulkanMemory {
    VkDeviceMemory memory;
    VkDeviceSize offset, size;
    void *mapped;
    VkMemoryPropertyFlags flags;
    unsigned int memoryTypeIndex;
    void *reserved[4];
} UnityVulkanMemory;

typedef enum UnityVulkanResourceAccessMode {
    kUnityVulkanResourceAccess_ObserveOnly = 0,
    kUnityVulkanResourceAccess_PipelineBarrier = 1,
    kUnityVulkanResourceAccess_Recreate = 2
} UnityVulkanResourceAccessMode;

typedef struct UnityVulkanImage {
    UnityVulkanMemory memory;
    VkImage image;
    VkImageLayout layout;
    VkImageAspectFlags aspect;
    VkImageUsageFlags usage;
    VkFormat format;
    VkExtent3D extent;
    VkImageTiling tiling;
    VkImageType type;
    VkSampleCountFlagBits samples;
    int layers, mipCount;
    void *reserved[4];
} UnityVulkanImage;

typedef enum UnityVulkanEventRenderPassPreCondition {
    kUnityVulkanRenderPass_DontCare = 0,
    kUnityVulkanRenderPass_EnsureInside = 1,
    kUnityVulkanRenderPass_EnsureOutside = 2
} UnityVulkanEventRenderPassPreCondition;
typedef enum UnityVulkanGraphicsQueueAccess {
    kUnityVulkanGraphicsQueueAccess_DontCare = 0,
    kUnityVulkanGraphicsQueueAccess_Allow = 1
} UnityVulkanGraphicsQueueAccess;
enum {
    kUnityVulkanEventConfigFlag_EnsurePreviousFrameSubmission = 1 << 0,
    kUnityVulkanEventConfigFlag_FlushCommandBuffers = 1 << 1,
    kUnityVulkanEventConfigFlag_SyncWorkerThreads = 1 << 2,
    kUnityVulkanEventConfigFlag_ModifiesCommandBuffersState = 1 << 3
};
typedef struct UnityVulkanPluginEventConfig {
    UnityVulkanEventRenderPassPreCondition renderPassPrecondition;
    UnityVulkanGraphicsQueueAccess graphicsQueueAccess;
    uint32_t flags;
} UnityVulkanPluginEventConfig;

typedef PFN_vkGetInstanceProcAddr(UNITY_API *UnityVulkanInitCallback)(PFN_vkGetInstanceProcAddr getInstanceProcAddr,
                                                                      void *userdata);

typedef void (*ssu_unused_slot)(void); /* a function of the table this plugin never calls */

typedef struct IUnityGraphicsVulkanV2 {
    bool(UNITY_API *InterceptInitialization)(UnityVulkanInitCallback func, void *userdata);
    PFN_vkVoidFunction(UNITY_API *InterceptVulkanAPI)(const char *name, PFN_vkVoidFunction func);
    void(UNITY_API *ConfigureEvent)(int eventID, const UnityVulkanPluginEventConfig *config);
    UnityVulkanInstance(UNITY_API *Instance)(void);
    ssu_unused_slot CommandRecordingState;
    bool(UNITY_API *AccessTexture)(void *nativeTexture, const VkImageSubresource *subResource, VkImageLayout layout,
                                   VkPipelineStageFlags pipelineStageFlags, VkAccessFlags accessFlags,
                                   UnityVulkanResourceAccessMode accessMode, UnityVulkanImage *outImage);
    ssu_unused_slot AccessRenderBufferTexture;
    ssu_unused_slot AccessRenderBufferResolveTexture;
    ssu_unused_slot AccessBuffer;
    void(UNITY_API *EnsureOutsideRenderPass)(void);
    ssu_unused_slot EnsureInsideRenderPass;
    void(UNITY_API *AccessQueue)(UnityRenderingEventAndData callback, int eventId, void *userData, bool flush);
    ssu_unused_slot ConfigureSwapchain;
    ssu_unused_slot AccessTextureByID;
    bool(UNITY_API *AddInterceptInitialization)(UnityVulkanInitCallback func, void *userdata, int priority);
    bool(UNITY_API *RemoveInterceptInitialization)(UnityVulkanInitCallback func);
} IUnityGraphicsVulkanV2;

#endif /* SSU_UNITY_ABI_H */
