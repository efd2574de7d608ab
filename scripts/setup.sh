#!/usr/bin/env bash
# Create .venv and install sfumato into it. `scripts/setup.sh --test` also installs the test extra
# (pytest and diffusers, the parity oracle). Safe to run again: it reuses an existing .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip

# Install torch before sfumato: sfumato does not pin it, and an unpinned `torch` resolves to a
# multi-GB CUDA build on Linux. 2.13.0 is the CPU build available offline on our machines.
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q "torch==2.13.0" || python -m pip install -q torch
fi

extras=""
if [[ "${1:-}" == "--test" ]]; then extras="[test]"; fi
python -m pip install -q -e ".${extras}"
if [[ -n "$extras" ]]; then
    # OpenAI's reference tokenizer, to check our bundled CLIP vocabulary; its torchvision dependency
    # would pull a multi-GB CUDA torch, and the tokenizer does not need it.
    python -m pip install -q --no-deps clip-anytorch
fi
