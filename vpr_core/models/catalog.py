"""The model families by name, without importing torch (parsers and dashboards read them)."""

ARCHES = ("alexnet", "vgg16")  # the encoders
ENCODER_DIMS = {"alexnet": 256, "vgg16": 512}  # channels of each encoder's output
POOLINGS = ("netvlad", "max", "avg")
