"""Prompt adherence of the bundled shapes model, judged on pixels.

    python bench/demo_quality.py [--model DIR] [--num 200] [--steps 25] [--guidance 5] [--grid out.png]

Captions are held out: none of them occurs among the training set's captions (seed 0, the first
`--train-images` scenes). Each generated image is graded by `sfumato.training.judge`, which was
checked on ground-truth images (tests/training/test_shapes.py). Also reported: the unseen
shape-colour pairs of the "test" split, a harder test of composition.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

ATTRIBUTES = ("color", "shape", "background", "size", "position")


def held_out_captions(num: int, train_images: int, split: str, seed: int = 1_000_003) -> list[str]:
    from sfumato.training.shapes import sample_scene

    seen = {sample_scene(0, i, "train").caption for i in range(train_images)}
    captions, index = [], 0
    while len(captions) < num:
        caption = sample_scene(seed, index, split).caption
        index += 1
        if caption not in seen and caption not in captions:
            captions.append(caption)
    return captions


def generate(pipe, captions: list[str], steps: int, guidance: float, batch: int = 25):
    import torch

    images = []
    for start in range(0, len(captions), batch):
        chunk = captions[start : start + batch]
        generators = [torch.Generator().manual_seed(start + i) for i in range(len(chunk))]
        images += pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, generator=generators).images
    return images


def grade(images, captions: list[str]) -> dict[str, float]:
    from sfumato.training import check_caption

    hits = Counter()
    for image, caption in zip(images, captions):
        for key, ok in check_caption(image, caption).items():
            hits[key] += ok
    return {key: hits[key] / len(captions) for key in ATTRIBUTES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="pipeline folder (default: the bundled model)")
    parser.add_argument("--num", type=int, default=200)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--train-images", type=int, default=20_000)
    parser.add_argument("--grid", help="also save the first 50 images of the held-out set as one PNG")
    args = parser.parse_args()

    import torch

    from sfumato import DiffusionPipeline
    from sfumato.cli.generate import bundled_model

    torch.manual_seed(0)
    model = args.model or str(bundled_model())
    pipe = DiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    print(
        f"model {model}: {type(pipe).__name__}, {type(pipe.scheduler).__name__}, "
        f"{args.steps} steps, guidance {args.guidance}"
    )
    rows = {}
    for label, split in (("held-out captions", "train"), ("unseen shape-colour pairs", "test")):
        captions = held_out_captions(args.num, args.train_images, split)
        start = time.perf_counter()
        images = generate(pipe, captions, args.steps, args.guidance)
        rows[label] = grade(images, captions)
        print(f"  {label}: {len(captions)} images in {time.perf_counter() - start:.0f} s")
        if args.grid and split == "train":
            save_grid(images[:50], args.grid)
    print(f"\n{'set':<28}" + "".join(f"{a:>11}" for a in ATTRIBUTES))
    for label, scores in rows.items():
        print(f"{label:<28}" + "".join(f"{scores[a]:>10.1%} " for a in ATTRIBUTES))


def save_grid(images, path: str, columns: int = 10) -> None:
    from PIL import Image

    w, h = images[0].size
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * w, rows * h), "white")
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * w, (i // columns) * h))
    grid.save(path)


if __name__ == "__main__":
    main()
