"""360° and stereo: equirect projection and seam rules, sphere-true dreaming, stereo carry, metadata boxes.

`spherical` is the one home of the seam rules (wrap padding, latitude weights); `sphere` dreams
perspective views of the rotated sphere, `latitude` evens its push and its result per row (poles like
the horizon); `stereo` carries one eye's dream to the other by disparity;
`spherical_meta` writes and reads Spherical Video V1/V2 boxes in pure Python; `views` cuts look-around
views; `orbit` moves a 360° animation's camera (a turn of the sphere, a zoom toward the front). May import
torch, `stages.common`, `stages.dream` (the objective; stereo runs the octaves on the right eye) and
`stages.temporal` (a disparity is a flow between the eyes; the camera's resampling), never `pipeline`.
"""
