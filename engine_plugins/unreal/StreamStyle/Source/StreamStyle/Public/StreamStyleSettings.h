// StreamStyleSettings.h: Project Settings > Plugins > StreamStyle (saved in DefaultGame.ini), and the
// console variables that override them live: r.StreamStyle.Enable, r.StreamStyle.Prompt,
// r.StreamStyle.Steps, r.StreamStyle.Strength.
#pragma once

#include "CoreMinimal.h"
#include "Engine/DeveloperSettings.h"
#include "StreamStyleSettings.generated.h"

UCLASS(Config = Game, DefaultConfig, meta = (DisplayName = "StreamStyle"))
class STREAMSTYLE_API UStreamStyleSettings : public UDeveloperSettings
{
    GENERATED_BODY()

public:
    // ZeroMQ address of the resident service (docs/protocol.md): ipc:// on Linux.
    UPROPERTY(Config, EditAnywhere, Category = "Service")
    FString Address = TEXT("ipc:///tmp/streamstyle.sock");

    UPROPERTY(Config, EditAnywhere, Category = "Style")
    FString Prompt = TEXT("cel shading with ink outlines");

    // Denoising steps per frame, 1..4 (the protocol's range).
    UPROPERTY(Config, EditAnywhere, Category = "Style", meta = (ClampMin = 1, ClampMax = 4))
    int32 Steps = 2;

    UPROPERTY(Config, EditAnywhere, Category = "Style", meta = (ClampMin = 0.0, ClampMax = 1.0))
    float Strength = 1.0f;

    // A frame not back within this many milliseconds is shown raw (the service counts it late).
    UPROPERTY(Config, EditAnywhere, Category = "Service", meta = (ClampMin = 0.1, ClampMax = 1000.0))
    float DeadlineMs = 33.0f;

    UPROPERTY(Config, EditAnywhere, Category = "Service")
    int32 CudaDevice = 0;
};
