"""The field's released checkpoints, recognised by their keys and shapes: one module per family,
each with `recognise(state_dict) -> Released | None` that maps the authors' keys onto this
project's (`encoder.*`, `pool.*`). `FAMILIES` lists them in the order they are tried."""
from . import boq, cosplace, megaloc, mixvpr, salad

FAMILIES = (cosplace, mixvpr, boq, salad, megaloc)
