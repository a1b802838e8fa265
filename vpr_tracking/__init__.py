"""What the orchestrator writes to MLflow and the dashboards read back, declared once.

`names`: run kinds, tags, statuses and metric names; `uri`: which stores are accepted;
`store`: the one MLflow client (reads, writes, one error conversion); `params`: a config's
`LOGGED` settings as MLflow params; `flags`: the MLflow flags of the commands;
`search_space`: the swept dimensions; `trials`: a sweep's trials as table rows; `datasets`:
what a run trained and was measured on, as MLflow dataset inputs (`measured_on`). MLflow is
imported lazily, so that `vpr_core`'s verbs run without it.
"""
