"""The settings of the aggregators beyond NetVLAD's K, and how many encoder stages train: the
settings of a model to build (train, and eval of an untrained model). Each applies to its
aggregator only; a setting `<aggregator>_<name>` is that aggregator's `<name>` (its module's
keyword, whose default is the module's)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..models.aggregators import defaults
from ..settings import LOGGED, MODEL, RESTORED, SPEC, declared, setting, shown

# not RESTORED: a resumed run's model is its checkpoint's, and the stage takes the settings from
# there (`with_model`)
ROLES = (LOGGED, SPEC)


def _of(aggregator: str, name: str, help: str, parse=int, **declared_as):
    """Setting `name` of `aggregator` (refused with any other); its default is the module's."""
    default = defaults(aggregator).get(name)
    return setting(None, f"{aggregator}: {help}", group=MODEL, parse=parse,
                   only_with={"aggregator": aggregator}, roles=ROLES,
                   shown_default="none" if default is None else shown(default), **declared_as)


@dataclass(frozen=True)
class AggregatorSettings:
    gem_p: float | None = _of("gem", "p", "GeM's initial exponent (learnt)", float, positive=True)
    gem_fc_dim: int | None = _of("gem", "fc_dim", "a fully connected layer to this many "
                                 "dimensions after the pooling, as CosPlace", minimum=1)
    mixvpr_out_channels: int | None = _of("mixvpr", "out_channels", "channels after the "
                                          "channel projection", minimum=1)
    mixvpr_mix_depth: int | None = _of("mixvpr", "mix_depth", "feature-mixer blocks", minimum=1)
    mixvpr_mlp_ratio: float | None = _of("mixvpr", "mlp_ratio", "a mixer's hidden width over "
                                         "its input's", float, positive=True)
    mixvpr_out_rows: int | None = _of("mixvpr", "out_rows", "rows after the row projection",
                                      minimum=1)
    salad_cluster_dim: int | None = _of("salad", "cluster_dim", "dimensions of each cluster's "
                                        "features", minimum=1)
    salad_token_dim: int | None = _of("salad", "token_dim", "dimensions of the global token's "
                                      "features", minimum=1)
    boq_proj_channels: int | None = _of("boq", "proj_channels", "channels of the projected "
                                        "input (a multiple of 64: one attention head each)",
                                        minimum=64)
    boq_num_queries: int | None = _of("boq", "num_queries", "learnt queries per layer",
                                      minimum=1)
    boq_num_layers: int | None = _of("boq", "num_layers", "BoQ layers", minimum=1)
    boq_row_dim: int | None = _of("boq", "row_dim", "rows after the output projection",
                                  minimum=1)
    trainable_stages: int | None = setting(
        None, "with pretrained weights, how many of the encoder's last stages train (layers "
        "of AlexNet/VGG16 and of a ResNet, DINOv2 blocks)", group=MODEL, parse=int, minimum=0,
        roles=(RESTORED, LOGGED, SPEC),
        shown_default="the authors': AlexNet 1, VGG16 5, a ResNet from layer3 on, DINOv2 4")


# the settings a checkpoint holds as its model was built (GeM's p, MixVPR's, ...; not how many
# stages train): a resumed run takes them from its checkpoint, never again from a flag
BUILT_SETTINGS = tuple(name for name, meta in declared(AggregatorSettings) if meta.only_with)


def with_model(config, shape):
    """`config` with the model settings of `shape` (a checkpoint's `ModelShape`): its arch,
    aggregator and the aggregator's settings, where the config has a setting for them."""
    fields = {f.name for f in dataclasses.fields(config)}
    values = {"arch": shape.arch, "aggregator": shape.aggregator}
    for key, value in shape.settings:
        for name in (key, f"{shape.aggregator}_{key}"):
            if name in fields:
                values[name] = value
                break
    return dataclasses.replace(config, **values)
