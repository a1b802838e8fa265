"""Compressed variants of a trained model, each a method module with the same four functions.

A method module (`pca`, `prune`, `quantize`, `half`, `pq`) has:

- `validate(settings: dict, model: PlaceModel) -> dict`: the settings, checked against the
  model (a `UserError` for an amount outside (0, 1), a dimension too large, ...);
- `apply(model, settings, context: CompressionContext) -> (model, extra)`: the compressed
  model (an `nn.Module` from images [N, 3, H, W] to descriptors [N, D']) and `extra`, a dict
  of tensors the checkpoint keeps beside the state dict (e.g. a PQ codebook);
- `rebuild(model, settings, state_dict, extra) -> nn.Module`: a freshly built model of the
  original architecture, reshaped so that `load_state_dict(state_dict)` fits (a pruned
  encoder's widths, quantized modules, a whitening layer, a dtype);
- `CPU_ONLY`: True when the compressed model runs on the CPU only (int8).

A compressed checkpoint is an ordinary one (`epoch`, `state_dict`, `recalls`, ...) plus
`compression = {"method", "settings", "base": {"arch", "pooling", "num_clusters"}}` and
`compression_extra` (tensors); `vpr_core.stages.starting_model.model_from_checkpoint` rebuilds it.
"""
from .context import CompressionContext
from .methods import method
from .variants import chain, compressed_checkpoint, cpu_only, search_index

__all__ = ["CompressionContext", "chain", "compressed_checkpoint", "cpu_only", "method",
           "search_index"]
