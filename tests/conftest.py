from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_florence import build_tiny_florence  # noqa: E402

CLIP = ROOT / "clips" / "street.mp4"
SCHEMA = ROOT / "streamer" / "schema" / "event.schema.json"

# The tiny models' fixed answers: a labelled box, and an OCR quad (bins 0..999 of the image size).
OD_ANSWER = "car<loc_100><loc_200><loc_500><loc_600>"
OCR_ANSWER = "AB 42<loc_100><loc_700><loc_300><loc_700><loc_300><loc_800><loc_100><loc_800>"


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
def event_validator():
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def probe_video(path: Path) -> dict:
    """Decode a video fully; what a user's player would see."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        return {"frames": frames, "count": len(frames), "rate": stream.average_rate, "codec": stream.codec_context.name,
                "width": stream.codec_context.width, "height": stream.codec_context.height}

POLY_ANSWER = "<poly><loc_100><loc_100><loc_300><loc_100><loc_300><loc_300><loc_100><loc_300></poly>"


@pytest.fixture(scope="session")
def tiny_poly(tmp_path_factory) -> Path:
    return build_tiny_florence(tmp_path_factory.mktemp("tiny-poly"), POLY_ANSWER)
