"""Commands that look at media and results without rendering: `probe`, `preview`, `metrics`, `view`.

Each reads files through `stages` and prints, draws or serves what it finds; none writes a render.
"""
