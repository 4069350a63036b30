"""One render, start to finish: the plan, the frame step, the loop and its threads, checkpoints, finalize.

`plan` resolves every rule once; `engine` owns the model; `step` dreams one frame (stills, video frames
and animation frames alike); `runner` and `passes` run the loop (`workers`: decode + flow ahead, encode +
checkpoint behind); `checkpoint` keeps the run directory that makes a killed render resume bit-identical;
`animate` and `animate_plan` run `deepdream animate`'s feedback loop on the same step, checkpoints and encoder.
May import `pipeline.config`, `pipeline.errors`, `pipeline.music` and `stages`; not `pipeline.scale`
except to hand a Ray render over.
"""
