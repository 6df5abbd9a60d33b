"""Where events and frames leave a run: `protocol` (the one `Output` protocol and the `Shown` frame every output
takes; no output is imported there), the outputs (`sinks`: event log, tracks, annotated video; `store`: the
SQLite event store; `delivery` over the durable `outbox`: MQTT with Home Assistant's `discovery` and
`switches`, and webhooks; `snapshots`), `annotate` (draws tracks on a copy), `runfolder` (where outputs go), and
`build`, which makes a run's outputs and stands above them all.

May import the package's shared vocabulary (`records`, `config`, `errors`, `sources`, `backoff`). Nothing here
imports `build` but the pipeline, and nothing here imports the pipeline, recording or the web side.
"""
