#!/usr/bin/env bash
# Build (and with --push, push) the CPU and CUDA images. REGISTRY defaults to the name the
# cluster configs use; point it at your own registry and update cluster/ to match.
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY=${REGISTRY:-ghcr.io/iif-ray/iif-ray}
RAY_VERSION=$(sed -n 's/^ARG RAY_VERSION=//p' docker/Dockerfile | head -1)
TORCH_VERSION=$(sed -n 's/^ARG TORCH_VERSION=//p' docker/Dockerfile | head -1)
PROJECT_VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
TAG="${PROJECT_VERSION}-ray${RAY_VERSION}-torch${TORCH_VERSION}"
docker build -f docker/Dockerfile -t "${REGISTRY}:${TAG}-cpu" .
docker build -f docker/Dockerfile --build-arg FLAVOUR=gpu \
    --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t "${REGISTRY}:${TAG}-cuda" .
if [[ "${1:-}" == "--push" ]]; then
    docker push "${REGISTRY}:${TAG}-cpu"
    docker push "${REGISTRY}:${TAG}-cuda"
fi
echo "built ${REGISTRY}:${TAG}-cpu and ${REGISTRY}:${TAG}-cuda"
