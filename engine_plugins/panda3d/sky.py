"""The sky dome the G-buffer pass draws behind the scene: a UV sphere seen from inside. It follows
the camera's position (never its rotation), so the sky's motion vectors are the camera's rotation
alone and its depth is the far plane."""

from __future__ import annotations

import math

from panda3d.core import Geom, GeomNode, GeomTriangles, GeomVertexData, GeomVertexFormat, GeomVertexWriter, NodePath


def make_dome(radius: float, rings: int = 16, segments: int = 32) -> NodePath:
    vdata = GeomVertexData("sky", GeomVertexFormat.getV3n3(), Geom.UHStatic)
    vertex, normal = GeomVertexWriter(vdata, "vertex"), GeomVertexWriter(vdata, "normal")
    for r in range(rings + 1):
        theta = math.pi * r / rings
        for s in range(segments + 1):
            phi = 2 * math.pi * s / segments
            x, y, z = math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta)
            vertex.addData3(x * radius, y * radius, z * radius)
            normal.addData3(-x, -y, -z)
    tris = GeomTriangles(Geom.UHStatic)
    row = segments + 1
    for r in range(rings):
        for s in range(segments):
            a, b = r * row + s, (r + 1) * row + s
            tris.addVertices(a, a + 1, b)  # wound to face the centre
            tris.addVertices(a + 1, b + 1, b)
    geom = Geom(vdata)
    geom.addPrimitive(tris)
    node = GeomNode("streamstyle-sky")
    node.addGeom(geom)
    path = NodePath(node)
    path.setTwoSided(True)
    return path
