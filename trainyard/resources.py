"""Resource classes: what a job asks for (`resources.gpus`) and which Celery queue serves it.

| spec                      | class   | Celery queue        | served by                                   |
|---------------------------|---------|---------------------|---------------------------------------------|
| no `resources` (or null)  | `any`   | `trainyard`         | every worker (the queue of earlier versions) |
| `{"gpus": 0}`             | `cpu`   | `trainyard.cpu`     | workers listing `cpu` in their classes      |
| `{"gpus": 1}`             | `gpu`   | `trainyard.gpu`     | workers listing `gpu`                       |
| `{"gpus": N}`, N >= 2     | `gpu-N` | `trainyard.gpu-N`   | workers listing `gpu-N`                     |

Workers subscribe to their classes' queues with `celery worker -Q` (bin/worker); the API refuses a job
whose class no configured worker serves (`TRAINYARD_RESOURCE_CLASSES`) instead of letting it wait forever.
Stdlib only: the API, the spec checks and the workers all use it.
"""
from __future__ import annotations

import re

DEFAULT_QUEUE = "trainyard"
ANY = "any"
_CLASS_RE = re.compile(r"^(cpu|gpu|gpu-([2-9]|[1-9][0-9]+))$")


def resource_class(gpus: int | None) -> str:
    """The class of a job asking for `gpus` GPUs (None: no preference)."""
    if gpus is None:
        return ANY
    if gpus == 0:
        return "cpu"
    if gpus == 1:
        return "gpu"
    return f"gpu-{gpus}"


def gpus_of(cls: str) -> int | None:
    if cls == ANY:
        return None
    if cls == "cpu":
        return 0
    if cls == "gpu":
        return 1
    return int(cls.removeprefix("gpu-"))


def queue_name(cls: str) -> str:
    return DEFAULT_QUEUE if cls == ANY else f"{DEFAULT_QUEUE}.{cls}"


def parse_classes(raw: str, what: str) -> tuple[str, ...]:
    """`"cpu, gpu-2"` -> ("cpu", "gpu-2"); ValueError naming `what` for anything else."""
    classes = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    bad = [c for c in classes if not _CLASS_RE.match(c)]
    if bad:
        raise ValueError(f"{what}: unknown resource class {bad[0]!r}; use cpu, gpu or gpu-N (N >= 2)")
    if not classes:
        raise ValueError(f"{what} names no resource class")
    return classes


def worker_queues(classes: tuple[str, ...]) -> list[str]:
    """The queues a worker serving `classes` consumes: its classes' queues and the default queue."""
    return [queue_name(c) for c in classes] + [DEFAULT_QUEUE]
