"""The presets (`deepdream -c NAME`), shipped inside the package: read them with importlib.resources."""
