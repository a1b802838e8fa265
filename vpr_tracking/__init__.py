"""What the orchestrator writes to MLflow and the dashboards read back, declared once.

`names`: run kinds, tags, statuses and metric names; `uri`: which stores are accepted;
`store`: the one MLflow client (reads, writes, one error conversion); `params`: a training
config as MLflow params; `search_space`: the swept dimensions; `trials`: a sweep's trials as
table rows. MLflow is imported lazily, so that `vpr_core`'s verbs run without it.
"""
