"""Temporal coherence between frames: optical flow on source frames, the reliability mask, residual warps.

Pure functions of source frames and dream residuals (numpy/OpenCV for flow, torch for the warp maths on
the dream's device), plus the camera motion of still animations (`motion`: flat frames; the sphere's is
`stages.vr.orbit`) and the scene-cut rule. May import `stages.common` and `stages.vr.spherical` (the 0/360°
wrap), never `pipeline`.
"""
