"""What the network is: the families by name (`catalog`), encoders (`backbones`), NetVLAD, the
encoder + pooling model (`place_model`), and the checkpoint format that holds them
(`checkpoints`)."""
