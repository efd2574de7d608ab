"""The bundled CLIP tokenizer equals OpenAI's CLIP BPE (SD 1.x text encoder tokenizer)."""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.tokenizer import build_clip_tokenizer

REPO = Path(__file__).resolve().parents[1]
BOS, EOS = 49406, 49407

PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "Hello, World! It's 3:45pm -- isn't it?",  # punctuation, contractions, digits split one by one
    "café crème brûlée à Zürich, naïve façade",  # accents
    "a cat 🐱 wearing sunglasses 😎🌈",  # emoji: byte-level fallback
    "日本語のテキスト and Ελληνικά",
    "  multiple   spaces\tand\nnewlines  ",
    "UPPER lower MiXeD 12345 $%^&*",
    "",
    "a red circle " * 30,  # 91 words: truncated to 77 ids ending in EOS
]
# Not compared: HTML entities ("&amp;"), which OpenAI unescapes and transformers keeps.


def _clip_wheel_file(name: str) -> Path | None:
    try:
        files = importlib.metadata.files("clip-anytorch") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f for f in files if f.name == name]
    return Path(str(found[0].locate())) if found else None


class ReferenceBPE:
    """CLIP's byte-level BPE written from the published algorithm (Radford et al. 2021 / GPT-2 byte table)."""

    def __init__(self, merges: list[tuple[str, str]]):
        regex = pytest.importorskip("regex")
        printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
        unprintable = [b for b in range(256) if b not in printable]
        self.byte_char = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(unprintable)}
        symbols = [self.byte_char[b] for b in printable + unprintable]
        tokens = symbols + [s + "</w>" for s in symbols] + [a + b for a, b in merges]
        tokens += ["<|startoftext|>", "<|endoftext|>"]
        self.ids = {tok: i for i, tok in enumerate(tokens)}
        self.rank = {pair: i for i, pair in enumerate(merges)}
        self.pattern = regex.compile(
            r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )
        self.regex = regex

    def word(self, chunk: str) -> list[str]:
        if chunk in ("<|startoftext|>", "<|endoftext|>"):
            return [chunk]
        parts = [self.byte_char[b] for b in chunk.encode("utf-8")]
        parts[-1] += "</w>"
        while len(parts) > 1:
            pairs = list(zip(parts, parts[1:]))
            pair = min(pairs, key=lambda p: self.rank.get(p, len(self.rank)))  # lowest-rank merge first
            if pair not in self.rank:
                break
            merged, i = [], 0
            while i < len(parts):  # merge every occurrence of that pair, left to right
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def __call__(self, text: str, max_length: int = 77) -> list[int]:
        text = self.regex.sub(r"\s+", " ", text).strip().lower()
        ids = [self.ids[p] for chunk in self.pattern.findall(text) for p in self.word(chunk)]
        ids = [BOS, *ids, EOS]
        return ids if len(ids) <= max_length else [*ids[: max_length - 1], EOS]


@pytest.fixture(scope="module")
def reference_bpe(clip_tokenizer_folder: Path) -> ReferenceBPE:
    gz = _clip_wheel_file("bpe_simple_vocab_16e6.txt.gz")
    if gz is not None:  # prefer OpenAI's original file over our derived merges.txt
        lines = gzip.decompress(gz.read_bytes()).decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    else:
        lines = (clip_tokenizer_folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    return ReferenceBPE([tuple(line.split()) for line in lines])


def test_folder_has_sd_tokenizer_files(clip_tokenizer_folder: Path):
    names = {p.name for p in clip_tokenizer_folder.iterdir()}
    assert {
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "LICENSE",
    } <= names
    assert (clip_tokenizer_folder / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    assert "Copyright (c) 2021 OpenAI" in (clip_tokenizer_folder / "LICENSE").read_text(encoding="utf-8")
    config = json.loads((clip_tokenizer_folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["model_max_length"] == 77 and config["tokenizer_class"] == "CLIPTokenizer"


def test_vocabulary_size_and_special_tokens(clip_tokenizer):
    assert len(clip_tokenizer) == 49408
    assert clip_tokenizer.model_max_length == 77
    assert (clip_tokenizer.bos_token, clip_tokenizer.bos_token_id) == ("<|startoftext|>", BOS)
    assert (clip_tokenizer.eos_token, clip_tokenizer.eos_token_id) == ("<|endoftext|>", EOS)
    assert clip_tokenizer.pad_token_id == EOS and clip_tokenizer.unk_token_id == EOS


def test_known_sd_prompt_ids(clip_tokenizer):
    # ids of the real SD 1.5 tokenizer (shared/reference/ecosystem.md, section 3 (i))
    ids = clip_tokenizer("a photo of an astronaut riding a horse on mars").input_ids
    assert ids == [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496, 49407]


def test_padding_to_max_length_uses_eos(clip_tokenizer):
    ids = clip_tokenizer("a photo", padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[:4] == [BOS, 320, 1125, EOS] and set(ids[4:]) == {EOS}


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_equal_reference_bpe(clip_tokenizer, reference_bpe, prompt):
    ids = clip_tokenizer(prompt, truncation=True, max_length=77).input_ids
    assert ids == reference_bpe(prompt)
    assert len(ids) <= 77 and ids[0] == BOS and ids[-1] == EOS


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ids_equal_openai_simple_tokenizer(clip_tokenizer, prompt):
    """OpenAI's own tokenizer file from clip-anytorch (loaded by path: `import clip` needs pkg_resources)."""
    pytest.importorskip("ftfy")
    source = _clip_wheel_file("simple_tokenizer.py")
    if source is None:
        pytest.skip("clip-anytorch not installed (pip install --no-deps clip-anytorch)")
    spec = importlib.util.spec_from_file_location("_openai_clip_simple_tokenizer", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = [BOS, *module.SimpleTokenizer().encode(prompt), EOS]
    expected = expected if len(expected) <= 77 else [*expected[:76], EOS]  # as clip.tokenize(truncate=True)
    assert clip_tokenizer(prompt, truncation=True, max_length=77).input_ids == expected


def test_build_script_reproduces_bundled_files(tmp_path, clip_tokenizer_folder):
    if _clip_wheel_file("bpe_simple_vocab_16e6.txt.gz") is None:
        pytest.skip("clip-anytorch not installed (pip install --no-deps clip-anytorch)")
    script = REPO / "scripts" / "build_clip_vocab.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "LICENSE"):
        assert (tmp_path / name).read_bytes() == (clip_tokenizer_folder / name).read_bytes(), name
    assert build_clip_tokenizer(tmp_path)("a horse").input_ids == [BOS, 320, 4558, EOS]


def test_clip_tokenizer_path_is_torch_free():
    code = (
        "import sys; from sfumato.assets import clip_tokenizer_path; p = clip_tokenizer_path();"
        "assert (p / 'vocab.json').is_file(); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
