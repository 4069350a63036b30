"""Media in and out: video decode and MP4 encode/join with PyAV, audio envelopes, stills, codec levels.

The only home of `av` imports. Frames cross this boundary as H×W×3 uint8 RGB arrays with their exact
source timestamps; nothing here knows about dreams or temporal state. May import `stages.common` and
`stages.vr.spherical_meta` (the metadata boxes written after a mux), nothing from `pipeline`.
"""
