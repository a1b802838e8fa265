"""The stages a command runs, each a function of a validated config: `cluster`, `train`,
`evaluate`, `compress` (and `starting_model`, the model a stage starts from)."""
