"""StreamStyle: real-time neural post-processing for games.

The repository root is this package (see pyproject's package-dir): `service/`, `interop/`,
`kernels/`, `model/` and `engine_plugins/` import as `streamstyle.<folder>`.
"""

__version__ = "0.1.0"
