"""Pictures of NetVLAD runs tracked in MLflow: `python -m dashboards compare|report|retrievals`.

`plots` and `style` are shared with the orchestrator (per-trial learning curves); `runs` reads
MLflow; one module per verb draws its picture.
"""
