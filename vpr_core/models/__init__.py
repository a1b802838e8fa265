"""What the network is: encoders (`backbones`), NetVLAD, the encoder + pooling model, and the
checkpoint format that holds them."""
from .backbones import ARCHES, ENCODER_DIMS, feature_map_size, save_fresh_weights
from .place_model import POOLINGS, PlaceModel, build_model

__all__ = ["ARCHES", "ENCODER_DIMS", "POOLINGS", "PlaceModel", "build_model", "feature_map_size",
           "save_fresh_weights"]
