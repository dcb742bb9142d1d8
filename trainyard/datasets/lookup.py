"""A tenant's data sets as the spec validator sees them, without Flask: the API and the sweep controller
(which runs in workers too) validate specs against the same lookup."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from trainyard.db.models import Dataset
from trainyard.spec import BUILTIN_DATASETS, DatasetInfo


def info_from_summary(dataset_id: str, summary: dict[str, Any]) -> DatasetInfo:
    splits = summary["splits"]
    return DatasetInfo(
        id=dataset_id,
        input_shape=tuple(summary["input_shape"]),
        task=summary["task"],
        n_classes=summary.get("n_classes"),
        has_validation=bool(splits.get("val")),
        has_test=bool(splits.get("test")),
        target_shape=tuple(summary["target_shape"]),
        train_samples=splits["train"],
        test_samples=splits.get("test") or 0,
    )


def dataset_lookup(session: Session, tenant: str) -> Callable[[str], DatasetInfo | None]:
    def lookup(dataset_id: str) -> DatasetInfo | None:
        if dataset_id in BUILTIN_DATASETS:
            return BUILTIN_DATASETS[dataset_id]
        row = session.get(Dataset, dataset_id)
        if row is None or row.tenant_id != tenant:
            return None
        return info_from_summary(row.id, row.info)

    return lookup


def lazy_dataset_lookup(db: Any, tenant: str) -> Callable[[str], DatasetInfo | None]:
    """`dataset_lookup` opening its own session only when asked about an uploaded data set: a spec naming a
    built-in one (most of them) costs no session at all."""
    def lookup(dataset_id: str) -> DatasetInfo | None:
        if dataset_id in BUILTIN_DATASETS:
            return BUILTIN_DATASETS[dataset_id]
        with db.session() as s:
            return dataset_lookup(s, tenant)(dataset_id)

    return lookup
