"""Measures of a result: temporal warp error and dream strength, 360° seam and pole measures, stereo agreement.

What the tests, `deepdream metrics` and `make bench` read; nothing here changes a frame. May import the
other `stages` sub-packages (flow, spherical helpers), never `pipeline`.
"""
