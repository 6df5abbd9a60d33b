"""Fixtures: the bundled clip, tiny Florence-2 models built offline, the event schema's validator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import CLIP, OCR_ANSWER, OD_ANSWER, POLY_ANSWER, SCHEMA
from tests.tiny_florence import build_tiny_florence


@pytest.fixture(scope="session")
def clip() -> Path:
    return CLIP


@pytest.fixture(scope="session")
def tiny_od(tmp_path_factory) -> Path:
    return build_tiny_florence(tmp_path_factory.mktemp("tiny-od"), OD_ANSWER)


@pytest.fixture(scope="session")
def tiny_ocr(tmp_path_factory) -> Path:
    return build_tiny_florence(tmp_path_factory.mktemp("tiny-ocr"), OCR_ANSWER)


@pytest.fixture(scope="session")
def tiny_poly(tmp_path_factory) -> Path:
    return build_tiny_florence(tmp_path_factory.mktemp("tiny-poly"), POLY_ANSWER)


@pytest.fixture(scope="session")
def event_validator():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB file system (tmpfs) to fill up; skipped where mounting is not allowed (not root, a container)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)
