"""Scale-out on Ray: the survey for cuts, chunks of whole segments, actors with the model loaded, the join.

Builds on `pipeline.render` (a chunk is an ordinary render pass into segments); `render` never imports
this package at module level, and Ray itself only when `scale.backend: ray` is asked for.
"""
