"""sfumato's CLIPTokenizer against transformers' (the reference) on the real 49408-token vocabulary."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sfumato import CLIPTokenizer, CLIPTokenizerFast
from sfumato.assets import clip_tokenizer_path
from sfumato.registry import entry_for, resolve

DEMO_TOKENIZER = (
    Path(__file__).resolve().parents[2] / "src" / "sfumato" / "assets" / "demo_model" / "tokenizer"
)

# prompts that exercise each step: whitespace, case, contractions, digits, punctuation runs, unicode
# normalisation (NFD "é"), bytes outside ASCII, emoji sequences, special tokens typed in the text
CORPUS = [
    "a photograph of an astronaut riding a horse",
    "Hello, world! It's a   cat.  ",
    "don't stop ... ok ?",
    "IT'S WE'LL THEY'VE I'M YOU'D",
    "caf\u00e9 cafe\u0301 \u00bd x\u00b2 \u2167 1024x768 3.14",
    "Z\u00fcrich \u00c6r\u00f8 \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u65e5\u672c\u8a9e",
    "emoji \U0001f431 \U0001f469\u200d\U0001f469\u200d\U0001f467 flags \U0001f1eb\U0001f1f7",
    "(masterpiece:1.2), [cat], {dog}, <lora:x:0.5>",
    "hello!!! ?!? ---",
    "A\tB\nC\r\nD\u00a0E",
    "\x00\x01 control",
    "&amp; <b>tag</b>",
    "<|endoftext|> typed <|startoftext|>in",
    "",
    "   ",
    "x" * 300,
    " ".join(["word"] * 100),
]

CALLS = [
    dict(),
    dict(padding="max_length", max_length=77, truncation=True),
    dict(padding=True),
    dict(padding="longest", truncation=True, max_length=12),
    dict(truncation=True),
    dict(add_special_tokens=False, padding=True),
]


@pytest.fixture(scope="module")
def reference():
    from transformers import CLIPTokenizer as Reference

    return Reference.from_pretrained(str(clip_tokenizer_path()))


@pytest.fixture(scope="module")
def ours():
    return CLIPTokenizer.from_pretrained(clip_tokenizer_path())


@pytest.mark.parametrize(
    "options", CALLS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "plain"
)
def test_ids_and_masks_equal_transformers(reference, ours, options):
    expected, got = reference(CORPUS, **options), ours(CORPUS, **options)
    assert got.input_ids == expected.input_ids
    assert got.attention_mask == expected.attention_mask
    assert got["input_ids"] is got.input_ids


def test_tokens_and_decoding_equal_transformers(reference, ours):
    for text in CORPUS:
        assert ours.tokenize(text) == reference.tokenize(text), text
        ids = reference(text).input_ids
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(
                ids, skip_special_tokens=skip
            ), (text, skip)
    batch = reference(CORPUS[:4], padding=True).input_ids
    assert ours.batch_decode(batch) == reference.batch_decode(batch)
    assert ours.decode(torch.tensor(batch[0])) == reference.decode(batch[0])
    assert ours.decode(np.array(batch[0])) == reference.decode(batch[0])
    assert ours.decode(320) == reference.decode(320) == "a"
    assert ours.convert_ids_to_tokens(np.int64(320)) == "a</w>"


def test_typed_special_tokens_in_capitals(reference, ours):
    """As transformers registers them for an SD folder: the start token matched after lowercasing, the end
    token only as written. (transformers' own flags vary with how a folder is loaded: with
    `pad_token="!"` it matches the end token in capitals too; we keep this one rule.)"""
    text = "<|STARTOFTEXT|> shout <|ENDOFTEXT|> <|endoftext|>"
    assert ours(text).input_ids == reference(text).input_ids
    assert ours(text).input_ids[:3] == [49406, 49406, 5214]


def test_single_text_and_tensors(reference, ours):
    assert ours("a cat").input_ids == reference("a cat").input_ids == [49406, 320, 2368, 49407]
    assert ours.encode("a cat") == reference.encode("a cat")
    for kind, array_type in (("pt", torch.Tensor), ("np", np.ndarray)):
        expected = reference(
            ["a cat", "a dog on a mat"], padding="max_length", max_length=77, return_tensors=kind
        )
        got = ours(["a cat", "a dog on a mat"], padding="max_length", max_length=77, return_tensors=kind)
        for key in ("input_ids", "attention_mask"):
            assert isinstance(got[key], array_type)
            assert got[key].shape == expected[key].shape == (2, 77)
            assert got[key].dtype == expected[key].dtype
            assert (got[key] == expected[key]).all()
    one = ours("a cat", return_tensors="pt")
    assert one.input_ids.shape == (1, 4)


def test_vocabulary_and_special_tokens(reference, ours):
    for name in (
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "unk_token_id",
        "vocab_size",
        "model_max_length",
    ):
        assert getattr(ours, name) == getattr(reference, name), name
    assert len(ours) == len(reference)
    assert ours.get_vocab() == reference.get_vocab()
    tokens = ["a</w>", "<|startoftext|>", "not-a-token"]
    assert ours.convert_tokens_to_ids(tokens) == reference.convert_tokens_to_ids(tokens)
    assert ours.convert_ids_to_tokens([320, 49406]) == reference.convert_ids_to_tokens([320, 49406])


def test_sdxl_second_tokenizer_pads_with_exclamation_mark(reference, ours):
    """SDXL's tokenizer_2 folder sets `pad_token: "!"` (id 0): padding and decoding follow it."""
    from transformers import CLIPTokenizer as Reference

    expected = Reference.from_pretrained(str(clip_tokenizer_path()), pad_token="!")
    got = CLIPTokenizer.from_pretrained(clip_tokenizer_path(), pad_token="!")
    texts = [*CORPUS, "hi!!! there ! !"]
    options = dict(padding="max_length", max_length=77, truncation=True)
    assert got.pad_token_id == expected.pad_token_id == 0
    assert got(texts, **options).input_ids == expected(texts, **options).input_ids
    for ids in expected(texts, **options).input_ids:
        assert got.decode(ids, skip_special_tokens=True) == expected.decode(ids, skip_special_tokens=True)


def test_tokenizer_json_folder_equals_transformers():
    """The bundled demo model's folder holds only tokenizer.json (as transformers 5 writes it)."""
    from transformers import CLIPTokenizer as Reference

    assert not (DEMO_TOKENIZER / "vocab.json").exists()
    expected, got = (
        Reference.from_pretrained(str(DEMO_TOKENIZER)),
        CLIPTokenizer.from_pretrained(DEMO_TOKENIZER),
    )
    for options in CALLS:
        assert got(CORPUS, **options).input_ids == expected(CORPUS, **options).input_ids, options
    assert got.model_max_length == expected.model_max_length == 77


def test_save_pretrained_round_trip(tmp_path, ours):
    """Written in both layouts: transformers reads the folder, and so do we, with or without tokenizer.json."""
    from transformers import CLIPTokenizer as Reference

    written = ours.save_pretrained(tmp_path)
    names = {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    assert {Path(p).name for p in written} == names
    assert {p.name for p in tmp_path.iterdir()} == names  # no staging left behind
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8") == (
        clip_tokenizer_path() / "merges.txt"
    ).read_text(encoding="utf-8")
    assert json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8")) == json.loads(
        (clip_tokenizer_path() / "vocab.json").read_text(encoding="utf-8")
    )
    expected = ours(CORPUS, padding=True).input_ids
    assert Reference.from_pretrained(str(tmp_path))(CORPUS, padding=True).input_ids == expected
    assert CLIPTokenizer.from_pretrained(tmp_path)(CORPUS, padding=True).input_ids == expected
    (tmp_path / "tokenizer.json").unlink()
    assert Reference.from_pretrained(str(tmp_path))(CORPUS, padding=True).input_ids == expected
    assert CLIPTokenizer.from_pretrained(tmp_path)(CORPUS, padding=True).input_ids == expected


def test_pipeline_subfolder_and_saved_settings(tmp_path):
    shutil.copytree(clip_tokenizer_path(), tmp_path / "tokenizer")
    config = json.loads((tmp_path / "tokenizer" / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["model_max_length"] = 64
    (tmp_path / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path, subfolder="tokenizer")
    assert tokenizer.model_max_length == 64
    assert len(tokenizer(["a cat"], padding="max_length").input_ids[0]) == 64
    assert (
        CLIPTokenizer.from_pretrained(tmp_path, subfolder="tokenizer", model_max_length=10).model_max_length
        == 10
    )


ADDED_PROMPTS = ["a <cat-toy> on a mat", "a <Cat-Toy>!", "<sks>dog", "x<cat-toy>y <sks> <SKS>"]


@pytest.mark.parametrize("layout", ["added_tokens.json", "added_tokens_decoder"])
def test_added_tokens_of_a_folder_equal_transformers(tmp_path, layout):
    """Textual inversion's tokens, baked into a folder: matched whole, lowercased, with the folder's ids."""
    from transformers import CLIPTokenizer as Reference

    shutil.copytree(clip_tokenizer_path(), tmp_path, dirs_exist_ok=True)
    tokens = {"<cat-toy>": 49408, "<sks>": 49409}
    if layout == "added_tokens.json":
        (tmp_path / "added_tokens.json").write_text(json.dumps(tokens), encoding="utf-8")
    else:
        config_path = tmp_path / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["added_tokens_decoder"] = {
            str(i): dict(
                content=t, lstrip=False, rstrip=False, normalized=True, single_word=False, special=False
            )
            for t, i in tokens.items()
        }
        config_path.write_text(json.dumps(config), encoding="utf-8")
    expected, got = Reference.from_pretrained(str(tmp_path)), CLIPTokenizer.from_pretrained(tmp_path)
    assert len(got) == len(expected) == 49410 and got.vocab_size == 49408
    assert got(ADDED_PROMPTS).input_ids == expected(ADDED_PROMPTS).input_ids
    assert 49408 in got("a <cat-toy>").input_ids
    for ids in expected(ADDED_PROMPTS).input_ids:
        assert got.decode(ids) == expected.decode(ids)

    saved = tmp_path / "saved"
    got.save_pretrained(saved)
    assert json.loads((saved / "added_tokens.json").read_text(encoding="utf-8")) == tokens
    for reread in (Reference.from_pretrained(str(saved)), CLIPTokenizer.from_pretrained(saved)):
        assert reread(ADDED_PROMPTS).input_ids == expected(ADDED_PROMPTS).input_ids
    (saved / "tokenizer.json").unlink()  # vocab.json + merges.txt + added_tokens.json alone
    assert CLIPTokenizer.from_pretrained(saved)(ADDED_PROMPTS).input_ids == expected(ADDED_PROMPTS).input_ids


def test_add_tokens_at_run_time_like_transformers(tmp_path):
    """Textual inversion's training adds its placeholder, then resizes the encoder to len(tokenizer)."""
    from transformers import CLIPTokenizer as Reference

    expected = Reference.from_pretrained(str(clip_tokenizer_path()))
    got = CLIPTokenizer.from_pretrained(clip_tokenizer_path())
    calls = [("<cat-toy>", False), (["<cat-toy>", "<b>", "a</w>"], False), ("<sp>", True)]
    for tokens, special in calls:
        assert got.add_tokens(tokens, special_tokens=special) == expected.add_tokens(
            tokens, special_tokens=special
        )
    assert len(got) == len(expected)
    prompts = ["a <Cat-Toy> on <b>x", "x <sp> y", "a </w>"]
    assert got(prompts).input_ids == expected(prompts).input_ids
    for ids in expected(prompts).input_ids:
        for skip in (False, True):
            assert got.decode(ids, skip_special_tokens=skip) == expected.decode(ids, skip_special_tokens=skip)
    got.save_pretrained(tmp_path)
    assert Reference.from_pretrained(str(tmp_path))(prompts).input_ids == expected(prompts).input_ids
    assert got.padding_side == expected.padding_side == "right" and got.is_fast
    assert got.special_tokens_map == expected.special_tokens_map
    assert got.all_special_tokens == expected.all_special_tokens


def test_added_tokens_with_a_gap_are_refused(tmp_path):
    shutil.copytree(clip_tokenizer_path(), tmp_path, dirs_exist_ok=True)
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<cat-toy>": 49500}), encoding="utf-8")
    with pytest.raises(ValueError, match="'<cat-toy>' has id 49500, but the next free id is 49408"):
        CLIPTokenizer.from_pretrained(tmp_path)


def test_built_from_a_vocabulary_and_merges_in_memory_or_on_disk(ours):
    folder = clip_tokenizer_path()
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    for built in (
        CLIPTokenizer(vocab, lines),
        CLIPTokenizer(vocab, [tuple(line.split(" ")) for line in lines]),
        CLIPTokenizer(folder / "vocab.json", folder / "merges.txt"),
    ):
        assert built(CORPUS, padding=True).input_ids == ours(CORPUS, padding=True).input_ids
    with pytest.raises(ValueError, match="merge rule 2 is 'a b c'"):
        CLIPTokenizer(vocab, ["a b", "a b c"])
    with pytest.raises(TypeError, match="both be file paths"):
        CLIPTokenizer(vocab, folder / "merges.txt")


def test_registry_resolves_transformers_names_to_ours():
    assert resolve("transformers", "CLIPTokenizer") is CLIPTokenizer
    assert resolve("transformers", "CLIPTokenizerFast") is CLIPTokenizerFast is CLIPTokenizer
    assert entry_for(CLIPTokenizer.from_pretrained(clip_tokenizer_path())) == [
        "transformers",
        "CLIPTokenizer",
    ]


def test_loading_and_running_a_pipeline_does_not_import_transformers():
    """transformers' import cost 1.6 s of a 2.1 s SD1.5 load; the bundled model must run without it."""
    code = (
        "import sys, sfumato\n"
        f"pipe = sfumato.DiffusionPipeline.from_pretrained({str(DEMO_TOKENIZER.parent)!r})\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "pipe('a red circle', num_inference_steps=1, height=32, width=32)\n"
        "assert type(pipe.tokenizer).__module__ == 'sfumato.tokenization.clip', type(pipe.tokenizer)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_long_text_without_truncation_is_logged(ours, caplog):
    with caplog.at_level(logging.WARNING, logger="sfumato.tokenization.clip"):
        ids = ours(" ".join(["word"] * 100)).input_ids
    assert len(ids) == 102
    assert "102 tokens long" in caplog.text and "truncation=True" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sfumato.tokenization.clip"):
        ours(" ".join(["word"] * 100), verbose=False)
    assert caplog.text == ""


def test_bad_calls_say_what_to_do(ours):
    with pytest.raises(ValueError, match="pass padding=True"):
        ours(["a", "a b c"], return_tensors="pt")
    with pytest.raises(ValueError, match="padding must be"):
        ours("a", padding="both")
    with pytest.raises(ValueError, match="truncation must be"):
        ours("a", truncation="sometimes")
    with pytest.raises(ValueError, match="return_tensors"):
        ours("a", return_tensors="tf")
    with pytest.raises(TypeError, match="text_pair"):
        ours("a", text_pair="b")
    with pytest.raises(TypeError, match="string or a list of strings"):
        ours([1, 2])
    with pytest.raises(ValueError, match="no room"):
        ours("a", truncation=True, max_length=1)


def test_bad_folders_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        CLIPTokenizer.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="unsupported options.*padding_side"):
        CLIPTokenizer.from_pretrained(clip_tokenizer_path(), padding_side="left")
    with pytest.raises(ValueError, match="'<pad>' is not in the tokenizer's vocabulary"):
        CLIPTokenizer.from_pretrained(clip_tokenizer_path(), pad_token="<pad>")

    broken = tmp_path / "broken"
    shutil.copytree(clip_tokenizer_path(), broken)
    (broken / "vocab.json").write_text("not json", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot read the tokenizer files"):
        CLIPTokenizer.from_pretrained(broken)

    wordpiece = tmp_path / "wordpiece"
    wordpiece.mkdir()
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece

    Tokenizer(WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(str(wordpiece / "tokenizer.json"))
    with pytest.raises(ValueError, match="WordPiece model; CLIP's tokenizer is BPE"):
        CLIPTokenizer.from_pretrained(wordpiece)
