"""Export: a model as one file a runtime without this project runs (ONNX, TorchScript).

`graph` wraps the model into the whole computation from RGB pixels in [0, 1] to descriptors;
`variants` says which compressed variants a format holds; `metadata` says what the file is;
`onnx_file` and `torchscript_file` write it; `check` runs it on a few images against
PyTorch. Only torch and onnx are imported here; onnxruntime runs a file in
`vpr_core.models.onnx_model`.
"""
