"""Full-size parity check: SD1.5 / SDXL UNets and the SD VAE with random weights (not run in CI; minutes).

For each model, one subprocess makes it with diffusers (seeded random weights) and saves it; then
diffusers and sfumato each load that folder in a fresh subprocess and run one forward on the same
inputs. Printed: max |difference| (absolute and relative to the output scale), load time and peak
RSS of each library's process.

    python bench/parity_full.py                 # sd15 unet + vae
    python bench/parity_full.py sd15 vae sdxl   # choose models (sdxl needs ~12 GB free RAM per step)
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SD15 = dict(
    attention_head_dim=8,
    block_out_channels=[320, 640, 1280, 1280],
    cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    sample_size=64,
)
SDXL = dict(
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20],
    block_out_channels=[320, 640, 1280],
    cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    projection_class_embeddings_input_dim=2816,
    transformer_layers_per_block=[1, 2, 10],
    use_linear_projection=True,
    sample_size=128,
)
VAE = dict(
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2,
    sample_size=512,
)
REPEATS = {"sd15": 2, "sdxl": 1, "vae": 2}
MODELS = {
    "sd15": ("UNet2DConditionModel", SD15),
    "sdxl": ("UNet2DConditionModel", SDXL),
    "vae": ("AutoencoderKL", VAE),
}


def inputs(name: str) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    if name == "vae":
        return dict(sample=torch.rand(1, 3, 256, 256, generator=g) * 2 - 1)
    kw = dict(
        sample=torch.randn(1, 4, 64, 64, generator=g),
        timestep=torch.tensor([500]),
        encoder_hidden_states=torch.randn(1, 77, MODELS[name][1]["cross_attention_dim"], generator=g),
    )
    if name == "sdxl":
        kw["added_cond_kwargs"] = dict(
            text_embeds=torch.randn(1, 1280, generator=g),
            time_ids=torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]]),
        )
    return kw


def stage(step: str, name: str, folder: str) -> None:
    """Run in a subprocess: `make` the model with diffusers, or load and run it with one library."""
    import torch

    torch.manual_seed(0)
    cls_name, config = MODELS[name]
    if step == "make":
        import diffusers

        getattr(diffusers, cls_name)(**config).save_pretrained(folder, max_shard_size="2GB")
        return
    lib = __import__(step)
    start = time.perf_counter()
    model = getattr(lib, cls_name).from_pretrained(folder).eval()
    load_s = time.perf_counter() - start
    times = []
    for _ in range(REPEATS[name]):  # the first forward also pages in memory-mapped weights
        start = time.perf_counter()
        with torch.no_grad():
            out = model(**inputs(name)).sample
        times.append(time.perf_counter() - start)
    forward_s, best_s = times[0], min(times)
    torch.save(out, Path(folder) / f"out_{step}.pt")
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(dict(load_s=load_s, forward_s=forward_s, best_s=best_s, peak_rss_gib=rss_gib)))


def run(step: str, name: str, folder: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--stage", step, name, folder], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{step} {name} failed:\n{result.stderr[-3000:]}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def main(names: list[str]) -> None:
    import torch

    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"parity_{name}_") as folder:
            start = time.perf_counter()
            run("make", name, folder)
            print(f"{name}: made and saved by diffusers in {time.perf_counter() - start:.0f} s", flush=True)
            stats = {lib: run(lib, name, folder) for lib in ("diffusers", "sfumato")}
            ref = torch.load(Path(folder) / "out_diffusers.pt")
            ours = torch.load(Path(folder) / "out_sfumato.pt")
            diff = (ref - ours).abs().max().item()
            scale = ref.abs().max().item()
            print(f"{name}: max |diff| = {diff:.3g} (= {diff / scale:.3g} × output scale {scale:.3g})")
            for lib, s in stats.items():
                print(
                    f"  {lib:9s} load {s['load_s']:6.1f} s   forward first {s['forward_s']:6.1f} s, best {s['best_s']:6.1f} s   "
                    f"peak RSS {s['peak_rss_gib']:5.2f} GiB"
                )
            d, o = stats["diffusers"], stats["sfumato"]
            print(
                f"  ratio sfumato/diffusers: load {o['load_s'] / d['load_s']:.2f}  best forward "
                f"{o['best_s'] / d['best_s']:.2f}  peak RSS {o['peak_rss_gib'] / d['peak_rss_gib']:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--stage":
        stage(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main(sys.argv[1:] or ["sd15", "vae"])
