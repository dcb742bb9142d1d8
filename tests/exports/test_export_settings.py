"""TRAINYARD_EXPORT_FORMATS: which exports a worker makes, in the catalogue's order; unknown ones fail fast."""
from __future__ import annotations

import pytest

from trainyard.db.exports import EXPORT_FORMATS
from trainyard.settings import Settings, SettingsError


@pytest.mark.parametrize("raw, formats", [
    (None, ("savedmodel", "keras-serving", "onnx")),
    ("onnx, savedmodel", ("savedmodel", "onnx")),
    ("keras-serving", ("keras-serving",)),
    ("none", ()),
    ("", ()),
])
def test_export_formats(raw: str | None, formats: tuple[str, ...]) -> None:
    env = {} if raw is None else {"TRAINYARD_EXPORT_FORMATS": raw}
    assert Settings.from_env(env).export_formats == formats
    assert set(formats) <= set(EXPORT_FORMATS)


def test_an_unknown_export_format_fails_fast() -> None:
    with pytest.raises(SettingsError, match="TRAINYARD_EXPORT_FORMATS lists pmml, tflite; the formats are "
                                            "savedmodel, keras-serving, onnx"):
        Settings.from_env({"TRAINYARD_EXPORT_FORMATS": "onnx,tflite,pmml"})
