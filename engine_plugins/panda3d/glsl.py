"""The plugin's shaders, in Panda3D's GLSL: the G-buffer pass and the composite.

G-buffer pass (one draw per object, five render targets; see contract.py for the slot they fill):
- 0 colour: linear HDR, the engine's own shading (sun, sky ambient, GGX specular, emission);
- 1 geometry: world-space normal (y up), linear view depth;
- 2 surface: albedo, roughness;
- 3 motion: current-to-previous offset in pixels (x right, y down), metallic, object id;
- 4 extra: the surface point in its object's frame, the sun term (for capture oracles; never sent).
Every output is finite and clamped to what float16 holds, sky included: the sky is a dome that
follows the camera, so its motion is the camera's rotation alone.

Motion comes from this node's previous model matrix and the camera's previous view-projection,
set by the pass as `ss_prev_model` / `ss_prev_view_proj` before each frame: camera and object
motion both. The current position is the fragment's own pixel centre (gl_FragCoord), so a static
scene seen by a static camera has exactly zero motion.

Panda3D's world is z up; the contract's is y up (x, y, z)_panda -> (x, z, -y).
"""

GBUFFER_VERT = """#version 330
uniform mat4 p3d_ModelViewProjectionMatrix;
uniform mat4 p3d_ModelViewMatrix;
uniform mat4 p3d_ModelMatrix;
uniform mat4 ss_prev_model;
uniform mat4 ss_prev_view_proj;

in vec4 p3d_Vertex;
in vec3 p3d_Normal;
in vec4 p3d_Tangent;
in vec4 p3d_Color;
in vec2 p3d_MultiTexCoord0;

out vec4 v_prev_clip;
out vec3 v_world;
out vec3 v_object;
out vec3 v_normal;
out vec4 v_tangent;
out vec4 v_color;
out vec2 v_uv;
out float v_depth;

void main() {
    gl_Position = p3d_ModelViewProjectionMatrix * p3d_Vertex;
    v_prev_clip = ss_prev_view_proj * (ss_prev_model * p3d_Vertex);
    v_world = (p3d_ModelMatrix * p3d_Vertex).xyz;
    v_object = p3d_Vertex.xyz;
    v_depth = -(p3d_ModelViewMatrix * p3d_Vertex).z;
    mat3 normal_matrix = transpose(inverse(mat3(p3d_ModelMatrix)));
    v_normal = normal_matrix * p3d_Normal;
    v_tangent = vec4(mat3(p3d_ModelMatrix) * p3d_Tangent.xyz, p3d_Tangent.w);
    v_color = p3d_Color;
    v_uv = p3d_MultiTexCoord0;
}
"""

GBUFFER_FRAG = """#version 330
uniform sampler2D p3d_TextureModulate;   // base colour; Panda binds white when absent
uniform sampler2D p3d_TextureSelector;   // glTF metallic-roughness (g roughness, b metallic)
uniform sampler2D p3d_TextureNormal;     // tangent-space normal map; flat when absent
uniform sampler2D p3d_TextureEmission;
uniform struct p3d_MaterialParameters {
    vec4 baseColor;
    vec4 emission;
    float roughness;
    float metallic;
} p3d_Material;
uniform vec4 p3d_ColorScale;

uniform vec2 ss_size;            // render-target size, pixels
uniform vec3 ss_camera_pos;      // world
uniform vec3 ss_sun_dir;         // world, toward the sun, unit
uniform vec3 ss_sun_color;
uniform vec3 ss_sky_zenith;
uniform vec3 ss_sky_horizon;
uniform vec2 ss_depth_range;     // near, far: depth is clamped to it; the sky writes far
uniform float ss_object_id;
uniform float ss_is_sky;
uniform float ss_has_material;

in vec4 v_prev_clip;
in vec3 v_world;
in vec3 v_object;
in vec3 v_normal;
in vec4 v_tangent;
in vec4 v_color;
in vec2 v_uv;
in float v_depth;

layout(location = 0) out vec4 o_color;
layout(location = 1) out vec4 o_geometry;
layout(location = 2) out vec4 o_surface;
layout(location = 3) out vec4 o_motion;
layout(location = 4) out vec4 o_extra;

const float PI = 3.14159265;
const float HALF_MAX = 60000.0;

vec3 y_up(vec3 v) { return vec3(v.x, v.z, -v.y); }

vec3 sky(vec3 d) {
    float up = clamp(d.z, 0.0, 1.0);
    vec3 c = mix(ss_sky_horizon, ss_sky_zenith, up) * 1.2;
    return c + ss_sun_color * pow(max(dot(d, ss_sun_dir), 0.0), 400.0) * 4.0;
}

void main() {
    vec2 cur = gl_FragCoord.xy / ss_size * 2.0 - 1.0;
    vec2 motion = vec2(0.0);
    if (v_prev_clip.w > 1e-5) {
        vec2 prev = v_prev_clip.xy / v_prev_clip.w;
        motion = vec2((prev.x - cur.x) * 0.5 * ss_size.x, -(prev.y - cur.y) * 0.5 * ss_size.y);
    }
    float limit = 4.0 * max(ss_size.x, ss_size.y);
    motion = clamp(motion, vec2(-limit), vec2(limit));
    vec3 view_dir = normalize(v_world - ss_camera_pos);

    if (ss_is_sky > 0.5) {
        vec3 c = sky(view_dir);
        o_color = vec4(clamp(c, 0.0, HALF_MAX), 1.0);
        o_geometry = vec4(y_up(-view_dir), ss_depth_range.y);
        o_surface = vec4(clamp(c, 0.0, 1.0), 1.0);
        o_motion = vec4(motion, 0.0, 0.0);
        o_extra = vec4(y_up(view_dir) * 8.0, 0.0);
        return;
    }

    vec4 base = texture(p3d_TextureModulate, v_uv) * v_color * p3d_ColorScale;
    if (ss_has_material > 0.5) {
        base *= p3d_Material.baseColor;
    }
    vec3 albedo = clamp(base.rgb, 0.0, 1.0);
    vec4 mr = texture(p3d_TextureSelector, v_uv);
    float roughness = clamp(ss_has_material > 0.5 ? p3d_Material.roughness * mr.g : 0.6, 0.04, 1.0);
    float metallic = clamp(ss_has_material > 0.5 ? p3d_Material.metallic * mr.b : 0.0, 0.0, 1.0);

    vec3 n = normalize(v_normal);
    if (!gl_FrontFacing) {
        n = -n;
    }
    vec3 t = v_tangent.xyz - n * dot(n, v_tangent.xyz);
    if (dot(t, t) > 1e-8) {
        t = normalize(t);
        vec3 b = cross(n, t) * (v_tangent.w < 0.0 ? -1.0 : 1.0);
        vec3 tn = texture(p3d_TextureNormal, v_uv).xyz * 2.0 - 1.0;
        vec3 mapped = tn.x * t + tn.y * b + tn.z * n;
        if (dot(mapped, mapped) > 1e-8) {
            n = normalize(mapped);
        }
    }
    if (!(dot(n, n) > 0.5)) {
        n = -view_dir;  // degenerate normal data: face the viewer rather than write NaN
    }

    vec3 V = -view_dir;
    vec3 L = ss_sun_dir;
    vec3 H = normalize(L + V);
    float ndl = max(dot(n, L), 0.0);
    float ndv = max(dot(n, V), 1e-3);
    float ndh = max(dot(n, H), 0.0);
    float a2 = pow(roughness, 4.0);
    float dd = ndh * ndh * (a2 - 1.0) + 1.0;
    float D = a2 / (PI * dd * dd + 1e-6);
    vec3 F0 = mix(vec3(0.04), albedo, metallic);
    vec3 F = F0 + (1.0 - F0) * pow(1.0 - max(dot(H, V), 0.0), 5.0);
    float k = (roughness + 1.0) * (roughness + 1.0) / 8.0;
    float G = ndv / (ndv * (1.0 - k) + k) * ndl / (ndl * (1.0 - k) + k);
    vec3 spec = D * F * G / (4.0 * ndv * max(ndl, 1e-3) + 1e-4);
    vec3 diffuse = albedo * (1.0 - metallic) / PI;
    vec3 ambient = mix(ss_sky_horizon, ss_sky_zenith, n.z * 0.5 + 0.5) * 0.35 * mix(albedo, F0, metallic);
    vec3 emission = ss_has_material > 0.5 ? p3d_Material.emission.rgb * texture(p3d_TextureEmission, v_uv).rgb : vec3(0.0);
    vec3 color = (diffuse + spec) * ss_sun_color * ndl * PI + ambient + emission;

    float depth = clamp(v_depth, ss_depth_range.x, ss_depth_range.y);
    o_color = vec4(clamp(color, 0.0, HALF_MAX), 1.0);
    o_geometry = vec4(y_up(n), depth);
    o_surface = vec4(albedo, roughness);
    o_motion = vec4(motion, metallic, ss_object_id);
    o_extra = vec4(y_up(v_object), ndl);
}
"""

# The composite: what the player sees. Modes: 0 the engine's own frame, 1 stylized, 2 side by side
# (engine left, stylized right, each letterboxed into half the window). The stylized frame comes
# from the service top row first; the engine's frame is a GL target, bottom row first.
COMPOSITE_VERT = """#version 330
uniform mat4 p3d_ModelViewProjectionMatrix;
in vec4 p3d_Vertex;
in vec2 p3d_MultiTexCoord0;
out vec2 v_uv;
void main() {
    gl_Position = p3d_ModelViewProjectionMatrix * p3d_Vertex;
    v_uv = p3d_MultiTexCoord0;
}
"""

COMPOSITE_FRAG = """#version 330
uniform sampler2D ss_raw;       // linear HDR colour target
uniform sampler2D ss_styled;    // rgba8 from the service's output slot
uniform float ss_mode;
uniform float ss_styled_valid;  // 0: the service is late or gone, show the engine's frame
uniform float ss_exposure;
in vec2 v_uv;
out vec4 o_color;

vec3 raw(vec2 uv) {
    vec3 c = max(texture(ss_raw, uv).rgb * ss_exposure, 0.0);
    return pow(c / (1.0 + c), vec3(1.0 / 2.2));  // the contract's linear_hdr tone map
}

vec3 styled(vec2 uv) {
    return ss_styled_valid > 0.5 ? texture(ss_styled, vec2(uv.x, 1.0 - uv.y)).rgb : raw(uv);
}

void main() {
    if (ss_mode < 0.5) {
        o_color = vec4(raw(v_uv), 1.0);
    } else if (ss_mode < 1.5) {
        o_color = vec4(styled(v_uv), 1.0);
    } else {
        vec2 uv = vec2(fract(v_uv.x * 2.0), (v_uv.y - 0.25) * 2.0);
        if (uv.y < 0.0 || uv.y > 1.0) {
            o_color = vec4(0.0, 0.0, 0.0, 1.0);
        } else {
            o_color = vec4(v_uv.x < 0.5 ? raw(uv) : styled(uv), 1.0);
        }
    }
}
"""
