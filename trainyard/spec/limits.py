"""Operator-set ceilings on what one job may ask for (settings can override the defaults)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecLimits:
    max_layers: int = 64
    max_params: int = 50_000_000
    max_epochs: int = 10_000
    max_batch_size: int = 65_536
    max_runtime_seconds: int = 7 * 24 * 3600
    # One training step (trainyard/spec/cost.py): about 10 s on a busy 2-core CPU at these defaults; a GPU
    # machine can allow much more.
    max_step_flops: int = 30_000_000_000
    max_step_activations: int = 100_000_000
    max_recurrent_steps: int = 2048
    # Orthogonal initializers' QR decompositions (about 10 s of one native op on a CPU at this default).
    max_init_flops: int = 200_000_000_000
    # The resource classes some configured worker serves (trainyard/resources.py); a job asking for another
    # would wait forever, so it is refused. Jobs without `resources` run anywhere.
    resource_classes: tuple[str, ...] = ("cpu",)
