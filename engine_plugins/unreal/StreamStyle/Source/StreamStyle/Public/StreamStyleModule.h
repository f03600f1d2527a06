// StreamStyleModule.h: the runtime module. At PostConfigInit (before the RHI exists) it asks the
// Vulkan RHI for the bridge's device extensions; after engine init it registers the scene view
// extension that does the per-frame work.
#pragma once

#include "CoreMinimal.h"
#include "Modules/ModuleInterface.h"

class FStreamStyleViewExtension;

class FStreamStyleModule : public IModuleInterface
{
public:
    virtual void StartupModule() override;
    virtual void ShutdownModule() override;

private:
    TSharedPtr<FStreamStyleViewExtension, ESPMode::ThreadSafe> ViewExtension;
    FDelegateHandle PostEngineInit;
};
