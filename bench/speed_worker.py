"""One measurement process of bench/speed.py: import, load, generate, time the parts, report JSON.

    python bench/speed_worker.py LIB FOLDER SIZE DTYPE MODE LAUNCH_TIME OUT_NPZ [--first-only]
    python bench/speed_worker.py LIB --load FOLDER DTYPE VARIANT      # peak RSS of loading only

LIB is `diffusers` or `sfumato`; MODE is `default` for diffusers and `exact`, `exact+mem` (with
`keep_freed_memory()`), `cli` (exact mode with the `sfumato` command's process settings: kept freed
memory, and huge pages, which bench/speed.py asks for in this process's environment) or `fast` for
sfumato. LAUNCH_TIME is the parent's `time.time()` just before starting this process, so the
whole-process figure includes interpreter start-up.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

PROMPT = "a photograph of an astronaut riding a horse"
STEPS, GUIDANCE = 4, 7.5  # PNDM with 4 steps = 5 UNet calls (performance.md's setting)


def pipeline_class(lib: str, folder: str):
    """`lib`'s class for the folder's `_class_name` ("diffusers" or "sfumato"), imported now (import time is measured)."""
    with open(f"{folder}/model_index.json", encoding="utf-8") as f:
        return getattr(__import__(lib), json.load(f)["_class_name"])


def load_options(cls) -> dict:
    return {"safety_checker": None} if cls.__name__ == "StableDiffusionPipeline" else {}


def unet_inputs(unet, size: int, dtype, generator) -> tuple[tuple, dict]:
    """Random (latents, t) and keyword inputs of one CFG-batch UNet call, SD or SDXL."""
    import torch

    h = size // 8
    latents = torch.randn(2, 4, h, h, generator=generator).to(dtype)
    kwargs = dict(
        encoder_hidden_states=torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator).to(
            dtype
        )
    )
    if unet.config.addition_embed_type == "text_time":  # SDXL: pooled text embeds + 6 size/crop numbers
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = dict(
            text_embeds=torch.randn(2, pooled, generator=generator).to(dtype),
            time_ids=torch.tensor([[size, size, 0, 0, size, size]] * 2).to(dtype),
        )
    return (latents, torch.tensor(500)), kwargs


def text_encoders(pipe) -> list:
    return [m for m in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if m is not None]


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(
    lib: str,
    folder: str,
    size: int,
    dtype_name: str,
    mode: str,
    launch: float,
    out_npz: str,
    first_only: bool,
) -> None:
    import torch

    cls = pipeline_class(lib, folder)
    import_s = time.time() - launch
    dtype = getattr(torch, dtype_name)
    start = time.time()
    pipe = cls.from_pretrained(folder, torch_dtype=dtype, **load_options(cls))
    if lib == "sfumato":
        from sfumato import runtime

        if "mem" in mode or mode.startswith("cli"):
            runtime.keep_freed_memory()
        if mode.startswith("fast"):
            pipe.optimize("fast")  # exact mode is what from_pretrained already gave
    pipe.set_progress_bar_config(disable=True)
    load_s = time.time() - start

    def generate():
        g = torch.Generator().manual_seed(0)
        return pipe(
            PROMPT, height=size, width=size, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
            generator=g, output_type="np",
        ).images  # fmt: skip

    with torch.inference_mode():
        first_s, image = timed(generate, 1)
        figures = dict(import_s=import_s, load_s=load_s, first_s=first_s, process_s=time.time() - launch)
        if first_only:  # the whole-process figures only (bench/speed.py --only-whole)
            return report(figures, out_npz, image=image)
        e2e_s, image = timed(generate, 1)
        # the UNet's own dtype: fast mode may compute in another than the one loaded
        args, kwargs = unet_inputs(pipe.unet, size, pipe.unet.dtype, torch.Generator().manual_seed(1))
        unet_s, unet_out = timed(lambda: pipe.unet(*args, **kwargs).sample, 2)
        vae_in = args[0][:1] / pipe.vae.config.scaling_factor
        vae_s, vae_out = timed(lambda: pipe.vae.decode(vae_in.to(pipe.vae.dtype)).sample, 2)
        ids = pipe.tokenizer([PROMPT, ""], padding="max_length", max_length=77, return_tensors="pt").input_ids
        text_s, _ = timed(lambda: [enc(ids, output_hidden_states=True)[0] for enc in text_encoders(pipe)], 3)
    figures.update(e2e_s=e2e_s, unet_s=unet_s, vae_s=vae_s, text_s=text_s)
    report(figures, out_npz, image=image, unet=unet_out.float().numpy(), vae=vae_out.float().numpy())


def report(figures: dict, out_npz: str, **outputs) -> None:
    """Save the outputs for the parent's check against diffusers; print the figures with the peak RSS."""
    import numpy as np

    np.savez(out_npz, **{name: np.asarray(value, dtype=np.float32) for name, value in outputs.items()})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({**figures, "peak_rss": rss}))


def load_only(lib: str, folder: str, dtype_name: str, variant: str) -> None:
    """Peak RSS of loading (and reading every weight once) in `dtype_name` from the `variant` files."""
    import torch

    cls = pipeline_class(lib, folder)
    start = time.perf_counter()
    pipe = cls.from_pretrained(
        folder, torch_dtype=getattr(torch, dtype_name), variant=None if variant == "none" else variant,
        **load_options(cls),
    )  # fmt: skip
    modules = [pipe.unet, pipe.vae, *text_encoders(pipe)]
    total = 0.0
    for module in modules:
        for p in module.parameters():
            total += float(p.float().sum())  # touches every page of every weight
    seconds = time.perf_counter() - start
    weights = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(load_s=seconds, peak_rss=rss, weights=weights)))


if __name__ == "__main__":
    if sys.argv[2] == "--load":
        load_only(sys.argv[1], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        lib, folder, size, dtype, mode, launch, out = sys.argv[1:8]
        main(lib, folder, int(size), dtype, mode, float(launch), out, "--first-only" in sys.argv[8:])
