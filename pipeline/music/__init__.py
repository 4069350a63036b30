"""Music video: keyframed parameters (`timeline`) and audio reactivity (`react`) as one per-frame table.

`timeline` validates keyframes and resolves values per frame; `table` builds the table for a render from
its frame times and the soundtrack's envelope (`stages.media.audio`) and applies a row to a frame's plan.
`timeline` builds on `pipeline.schema` only (`pipeline.config` calls it to check a config); `table` may
import `pipeline.config`, `pipeline.errors` and `stages`, not `pipeline.render`.
"""
