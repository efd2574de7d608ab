"""Generation parameters as AUTOMATIC1111 writes them into PNG `parameters` text chunks.

    a small red circle on a blue background
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x768, Model: sd15

Other tools (A1111, Forge, ComfyUI importers, Civitai) read this text, so an image says how it was
made. `parse` accepts the current and the older form (`Sampler: DPM++ 2M Karras`, no schedule type).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# A1111's order for the keys it knows; anything else follows before Version.
KEY_ORDER = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "RNG",
    "Tiling",
)
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def build(
    prompt: str,
    *,
    negative_prompt: str = "",
    steps: int,
    sampler: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str | None = None,
    schedule_type: str | None = None,
    denoising_strength: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The `parameters` text for one image (`seed` is that image's own seed)."""
    params: dict[str, Any] = {
        "Steps": steps,
        "Sampler": sampler,
        "Schedule type": schedule_type,
        "CFG scale": _number(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model": model,
        "Denoising strength": None if denoising_strength is None else _number(denoising_strength),
    }
    params.update(extra or {})
    ordered = [k for k in KEY_ORDER if k in params] + [
        k for k in params if k not in KEY_ORDER and k != "Version"
    ]
    if "Version" in params:
        ordered.append("Version")
    line = ", ".join(
        k if k == params[k] else f"{k}: {_quote(params[k])}" for k in ordered if params[k] is not None
    )
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def parse(text: str) -> dict[str, Any]:
    """Split a `parameters` text into prompt, negative prompt and the key/value pairs (as strings).

    `Size: 512x768` also gives `Size-1` = "512" and `Size-2` = "768", as A1111's reader does.
    """
    lines = text.strip().split("\n")
    params: dict[str, Any] = {}
    last = lines[-1] if lines else ""
    pairs = _PAIR.findall(last)
    if len(pairs) >= 3:
        lines = lines[:-1]
        for key, value in pairs:
            value = value.strip()
            if value.startswith('"') and value.endswith('"'):
                value = json.loads(value)
            params[key.strip()] = value
            size = _SIZE.match(value)
            if size:
                params[f"{key.strip()}-1"], params[f"{key.strip()}-2"] = size.groups()
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].lstrip()
        (negative if in_negative else prompt).append(line)
    params["Prompt"] = "\n".join(prompt)
    params["Negative prompt"] = "\n".join(negative)
    return params
