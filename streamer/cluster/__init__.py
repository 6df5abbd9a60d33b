"""The pipeline placed on a Ray cluster (the optional `ray` extra): `driver` places and watches (`views`: what it
knows of each actor), `source_actor` runs one source's `SourceRun` per actor, `model_worker` serves keyframes from
a model on one GPU."""

from streamer.cluster.driver import RayPipeline

__all__ = ["RayPipeline"]
