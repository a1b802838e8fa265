"""The field's released checkpoints, recognised by their keys and shapes: one module per family
(`cosplace`, `mixvpr`, `boq`, `salad`, `megaloc`), each with `recognise(state_dict) ->
Released | None` that maps the authors' keys onto this project's (`encoder.*`, `pool.*`)."""
