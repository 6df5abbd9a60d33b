#!/usr/bin/env bash
# The Python packages the device machine's image lacks (its python3 is 3.12 with torch, opencv-headless,
# numpy, safetensors, accelerate, peft), fetched here into .whl/ (git-ignored, about 24 MB) for
# bench/gpu_check.sh to install there. Versions: what this project's environment runs.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing_extensions==4.16.0 supervision==0.31.2 pyDeprecate==0.13.0 defusedxml==0.7.1 \
  transformers==5.24.0 huggingface_hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 tokenizers==0.23.3 \
  rapidfuzz==3.14.6 truststore==0.10.5
du -sh .whl
