"""Derive the SD 1.x CLIP-L tokenizer folder from OpenAI's BPE merges file.

The source is `bpe_simple_vocab_16e6.txt.gz` (MIT, OpenAI 2021), shipped in the PyPI wheel `clip-anytorch`
(`pip install --no-deps clip-anytorch` or `pip download --no-deps clip-anytorch`). The vocabulary follows
OpenAI's `SimpleTokenizer`: 256 byte symbols, the same with `</w>`, one entry per merge, then BOS/EOS
(49,408 entries). The output is the layout of `stable-diffusion-v1-5/tokenizer/`.

Usage:
    python scripts/build_clip_vocab.py [--source FILE.gz|WHEEL.whl] [--out FOLDER]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import zipfile
from pathlib import Path

GZ_NAME = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2  # OpenAI keeps the first 48,894 merges
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "sfumato" / "assets" / "clip_tokenizer"

LICENSE_TEXT = """\
The files vocab.json and merges.txt in this folder are derived from bpe_simple_vocab_16e6.txt.gz
of OpenAI's CLIP (https://github.com/openai/CLIP), obtained from the PyPI wheel clip-anytorch,
by scripts/build_clip_vocab.py. They are distributed under the following licence.

MIT License

Copyright (c) 2021 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable-character table; insertion order is the vocabulary order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}  # printable bytes map to themselves, in this order
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def read_merges_text(source: Path | None) -> str:
    """Text of the gz file, from a .gz path, a clip-anytorch wheel, or the installed clip-anytorch."""
    if source is None:
        try:
            files = importlib.metadata.files("clip-anytorch") or []
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(
                "clip-anytorch is not installed: run `pip install --no-deps clip-anytorch` or pass --source"
            ) from None
        found = [f for f in files if f.name == GZ_NAME]
        if not found:
            raise SystemExit(f"{GZ_NAME} not found in the installed clip-anytorch")
        source = Path(str(found[0].locate()))
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            data = wheel.read(f"clip/{GZ_NAME}")
    else:
        data = source.read_bytes()
    return gzip.decompress(data).decode("utf-8")


def derive(text: str) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) exactly as OpenAI's SimpleTokenizer builds them."""
    merges = text.split("\n")[1 : NUM_MERGES + 1]  # line 0 is a header
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise SystemExit("duplicate vocabulary entries: the source file is not the CLIP merges file")
    return vocab, merges


def added_token(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_folder(out: Path, vocab: dict[str, int], merges: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # indent=2 + newline: the format transformers saves (same byte size as SD 1.5's vocab.json)
    (out / "vocab.json").write_text(json.dumps(vocab, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {
        "bos_token": added_token(BOS),
        "eos_token": added_token(EOS),
        "pad_token": EOS,
        "unk_token": added_token(EOS),
    }
    config = {
        "add_prefix_space": False,
        "bos_token": {"__type": "AddedToken", **added_token(BOS)},
        "clean_up_tokenization_spaces": True,
        "do_lower_case": True,
        "eos_token": {"__type": "AddedToken", **added_token(EOS)},
        "errors": "replace",
        "model_max_length": 77,
        "pad_token": {"__type": "AddedToken", **added_token(EOS)},
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": {"__type": "AddedToken", **added_token(EOS)},
    }
    for name, payload in (("special_tokens_map.json", special), ("tokenizer_config.json", config)):
        (out / name).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (out / "LICENSE").write_text(LICENSE_TEXT, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=None, help=f"{GZ_NAME} or a clip-anytorch wheel")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    vocab, merges = derive(read_merges_text(args.source))
    write_folder(args.out, vocab, merges)
    print(f"wrote {len(vocab)} vocabulary entries and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
