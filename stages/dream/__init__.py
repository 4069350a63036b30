"""The dream engine's maths: the objective, (tiled) input gradient, ascent steps and octaves, and the models.

`objective` is the loss both the flat ascent and the sphere's view gradient use; `ascent` holds the step,
tiles and octave pyramid; `models` and `zoo` build frozen feature networks (EfficientNet-Lite0 embedded,
torchvision models from local weights). May import torch, `stages.common` and `stages.vr` (the sphere's
gradient and seam padding), never `pipeline`.
"""
