"""Pictures of runs tracked in MLflow: `python -m dashboards compare|report|retrievals|
compress-report`.

`plots` and `style` are shared with the orchestrator (per-trial learning curves); runs are
read through `vpr_tracking.store`; one module per verb draws its picture (`compare`,
`report` with `report_html` and `search_views`, `retrievals`, `compress_report`).
"""
