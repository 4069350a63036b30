"""Pure processing stages: decode, flow, warp, dream, encode, spherical maths and metadata.

Stages never import `pipeline`. They signal bad user input with `stages.common.InputError`.
"""
