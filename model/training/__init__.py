"""Training and evaluation of the Hybrid DiT on reference-engine clips and captures.

`data` makes clips (consecutive frames, their G-buffers in the engine's formats, the style
oracle's targets, a prompt phrasing); `objective` is the per-clip loss, computed the way the
sampler runs at inference (warped own previous output, per-token start levels, carried state);
`trainer` runs the loop (mixed precision, EMA, checkpoints, resume, progress, metrics log);
`evaluate` measures fidelity, temporal stability and prompt adherence through the per-frame path.
"""
