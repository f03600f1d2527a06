// StreamStylePack.shader: the built-in deferred pipeline's buffers into the contract's planes
// (docs/gbuffer-layout.md, the reference layout), one full-screen triangle into 7 render targets in the
// native plugin's plane formats. NOT COMPILED HERE (no Unity on this project's machines): check when a
// Unity project first imports the package.
//   color     rgba16f linear_hdr   the camera's colour before image effects (_StreamStyleColor)
//   depth     r32f    linear       LinearEyeDepth of _CameraDepthTexture
//   normals   rgba16f signed       _CameraGBufferTexture2.xyz * 2 - 1 (world space)
//   albedo    rgba8   unit         _CameraGBufferTexture0.rgb
//   roughness rg8     unit (x)     1 - smoothness (_CameraGBufferTexture1.a)
//   metallic  rg8     unit (y)     the specular colour's luminance, the Standard shader's stand-in
//   motion    rg16f   pixels       current to previous: -_CameraMotionVectorsTexture (which points from
//                                  the previous frame to this one, in uv, y up), scaled to pixels, y down
//   ids       r32_uint             0
Shader "Hidden/StreamStyle/Pack"
{
    SubShader
    {
        Pass
        {
            ZTest Always Cull Off ZWrite Off
            HLSLPROGRAM
            #pragma vertex Vert
            #pragma fragment Frag
            #pragma target 4.5
            #include "UnityCG.cginc"

            sampler2D _StreamStyleColor;
            sampler2D _CameraGBufferTexture0;
            sampler2D _CameraGBufferTexture1;
            sampler2D _CameraGBufferTexture2;
            sampler2D_half _CameraMotionVectorsTexture;
            UNITY_DECLARE_DEPTH_TEXTURE(_CameraDepthTexture);
            float4 _StreamStyleSize; // width, height

            struct V2F { float4 pos : SV_POSITION; float2 uv : TEXCOORD0; };

            V2F Vert(uint id : SV_VertexID)
            {
                V2F o;
                float2 uv = float2((id << 1) & 2, id & 2);
                o.pos = float4(uv * 2 - 1, 0, 1);
                o.uv = uv;
            #if UNITY_UV_STARTS_AT_TOP
                o.uv.y = 1 - o.uv.y;
            #endif
                return o;
            }

            struct Planes
            {
                half4 color : SV_Target0;
                float depth : SV_Target1;
                half4 normals : SV_Target2;
                half4 albedo : SV_Target3;
                half2 roughMetal : SV_Target4;
                half2 motion : SV_Target5;
                uint ids : SV_Target6;
            };

            Planes Frag(V2F i)
            {
                Planes o;
                half4 spec = tex2D(_CameraGBufferTexture1, i.uv);
                half2 mv = tex2D(_CameraMotionVectorsTexture, i.uv).xy;
                o.color = half4(tex2D(_StreamStyleColor, i.uv).rgb, 1);
                o.depth = LinearEyeDepth(SAMPLE_DEPTH_TEXTURE(_CameraDepthTexture, i.uv));
                o.normals = half4(normalize(tex2D(_CameraGBufferTexture2, i.uv).xyz * 2 - 1), 0);
                o.albedo = half4(tex2D(_CameraGBufferTexture0, i.uv).rgb, 1);
                o.roughMetal = half2(1 - spec.a, dot(spec.rgb, half3(0.2126, 0.7152, 0.0722)));
                o.motion = half2(-mv.x * _StreamStyleSize.x, mv.y * _StreamStyleSize.y);
                o.ids = 0;
                return o;
            }
            ENDHLSL
        }
    }
}
