"""The model families by name, without importing torch (parsers and dashboards read them).

A model is a backbone (`--arch`) and an aggregator (`--aggregator`). CNN backbones give a
feature map; the DINOv2 ViTs give a feature map of their patch tokens and their class token.
"""

CNNS = ("alexnet", "vgg16")  # cut at conv5, as pytorch-NetVlad
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
DINOV2S = ("dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14")
ARCHES = CNNS + RESNETS + DINOV2S
AGGREGATORS = ("netvlad", "gem", "mixvpr", "salad", "boq", "megaloc", "max", "avg")
# the encoders' output channels (ResNets: with and without their last block, see `channels`)
ENCODER_DIMS = {"alexnet": 256, "vgg16": 512,
                "resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048,
                "resnet152": 2048,
                "dinov2_vits14": 384, "dinov2_vitb14": 768, "dinov2_vitl14": 1024,
                "dinov2_vitg14": 1536}
# aggregators over a global pooling keep a ResNet's last block (CosPlace, EigenPlaces); the
# others take the finer map of the block before it (MixVPR, BoQ, VG-benchmark's NetVLAD)
KEEPS_LAST_BLOCK = ("gem", "max", "avg")
# aggregators that need a backbone's class token besides its feature map (ViTs only)
TAKES_CLASS_TOKEN = ("salad", "megaloc")
# aggregators that take a ViT's tokens before its final norm (BoQ's authors drop the norm)
UNNORMED_TOKENS = ("boq",)
# aggregators over a map of one size: their constructor also takes the map's (in_h, in_w)
MAP_SIZED = ("mixvpr",)
PATCH = 14  # the DINOv2 patch size: images are multiples of it


def is_vit(arch: str) -> bool:
    return arch in DINOV2S


def backbone_problem(arch: str, aggregator: str) -> str | None:
    """Why `aggregator` cannot pool the features of `arch` (None: it can)."""
    if aggregator in TAKES_CLASS_TOKEN and not is_vit(arch):
        return (f"the {aggregator} aggregator takes a ViT's class token, which {arch} does not "
                f"give; pass a DINOv2 --arch ({', '.join(DINOV2S)}) or another --aggregator")
    return None


def fits(arch: str, aggregator: str) -> bool:
    """Whether `aggregator` can pool the features of `arch`."""
    return backbone_problem(arch, aggregator) is None


def keeps_last_block(arch: str, aggregator: str) -> bool:
    return arch in RESNETS and aggregator in KEEPS_LAST_BLOCK


def channels(arch: str, aggregator: str = "netvlad") -> int:
    """The channels of the feature map `arch`'s encoder gives `aggregator`."""
    if arch in RESNETS and not keeps_last_block(arch, aggregator):
        return ENCODER_DIMS[arch] // 2  # layer3: half of layer4's channels
    return ENCODER_DIMS[arch]
