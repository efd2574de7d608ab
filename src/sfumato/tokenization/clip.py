"""CLIP's byte-level BPE tokenizer (`CLIPTokenizer`), drop-in for transformers' class, without transformers.

Loading a Stable Diffusion folder needs its tokenizer, and transformers' class costs the whole
transformers import: 1.6 s of a 2.1 s `from_pretrained` on an EPYC Zen 3 (python -X importtime),
in every process. This one runs on the `tokenizers` library that transformers itself uses (34 ms to
import) and gives the same ids, masks and decoded text as transformers 5's `CLIPTokenizer`
(tests/tokenization compare them on the real 49408-token vocabulary).

Folders in either layout load: `tokenizer.json` (the whole pipeline, as transformers 5 writes it),
else `vocab.json` + `merges.txt` (the Hub's SD 1.x/2.x/XL folders), with `tokenizer_config.json` /
`special_tokens_map.json` for the special tokens and `model_max_length`, and tokens added beyond the
vocabulary (`added_tokens.json`, `added_tokens_decoder`: textual inversion's, baked into a folder).
`save_pretrained` writes all of them, so transformers 4 and 5 and diffusers read the folder back.

CLIP's text pipeline, for folders without `tokenizer.json`: NFC, runs of whitespace to one space,
lowercase; split into CLIP's pre-tokens (the special tokens, English contractions, runs of letters,
single digits, runs of other non-space characters); bytes mapped to printable characters; BPE with
`</w>` marking the end of a word. Encoded: `<|startoftext|>` ids `<|endoftext|>`. Decoding joins the
tokens, turns each `</w>` into a space and strips the ends (no clean-up of spaces before
punctuation: transformers 5 skips it for BPE tokenizers too). Special tokens typed into a prompt are
matched whole, the start token in any case and the others as written, as transformers does for an SD
folder (its flags vary with how a folder is loaded: with `pad_token="!"` it also matches
`<|ENDOFTEXT|>`).

Not implemented (use transformers' class, passed as `tokenizer=` to `from_pretrained`): text pairs,
offsets, overflowing tokens, left padding.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any, ClassVar

from ..files import atomic_write_text
from ..hub import resolve_folder

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"

# CLIP's pre-tokens: special tokens, contractions, letter runs, single digits, other non-space runs
PRE_TOKEN_PATTERN = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)
END_OF_WORD = "</w>"
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
DEFAULT_SPECIALS = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}
NO_LIMIT = int(1e30)  # transformers' "no maximum length" when a folder names none


class BatchEncoding(dict):
    """The tokenizer's output: a dict of `input_ids` and `attention_mask`, also readable as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Any) -> BatchEncoding:
        """Tensors moved to `device` (for `return_tensors="pt"`)."""
        return BatchEncoding({k: v.to(device) if hasattr(v, "to") else v for k, v in self.items()})


class CLIPTokenizer:
    """CLIP's tokenizer with transformers' calling conventions: `tok(prompts, padding="max_length",
    max_length=77, truncation=True, return_tensors="pt").input_ids`, `decode`, `model_max_length`."""

    # written as the library in model_index.json, so diffusers loads saved pipelines with transformers
    index_library: ClassVar[str] = "transformers"
    model_input_names: ClassVar[list[str]] = ["input_ids", "attention_mask"]
    # read by code written for transformers' tokenizers; this one pads and truncates on the right only
    padding_side: ClassVar[str] = "right"
    truncation_side: ClassVar[str] = "right"
    is_fast: ClassVar[bool] = True

    def __init__(
        self,
        vocab: dict[str, int] | str | os.PathLike,
        merges: Sequence[str | tuple[str, str]] | str | os.PathLike,
        *,
        model_max_length: int = 77,
        bos_token: str = DEFAULT_SPECIALS["bos_token"],
        eos_token: str = DEFAULT_SPECIALS["eos_token"],
        unk_token: str = DEFAULT_SPECIALS["unk_token"],
        pad_token: str = DEFAULT_SPECIALS["pad_token"],
        name_or_path: str = "",
    ) -> None:
        """From a vocabulary (dict or `vocab.json` path) and merges (pairs, "a b" lines or a `merges.txt` path)."""
        specials = dict(bos_token=bos_token, eos_token=eos_token, unk_token=unk_token, pad_token=pad_token)
        self._setup(_clip_backend(vocab, merges, unk_token), specials, model_max_length)
        self.name_or_path = name_or_path

    def _setup(
        self,
        backend: Any,
        specials: dict[str, str],
        model_max_length: int,
        added: Sequence[tuple[int, dict[str, Any]]] = (),
    ) -> None:
        """Keep `backend`, give it the folder's `added` tokens (id, AddedToken fields) and the special tokens."""
        from tokenizers import AddedToken

        self._backend = backend
        for token_id, fields in added:  # in id order, each must land on the id the folder gave it
            if backend.token_to_id(fields["content"]) == token_id:
                continue  # already there (the start and end tokens, or tokenizer.json's own list)
            next_id = backend.get_vocab_size(with_added_tokens=True)
            if token_id != next_id:
                raise ValueError(
                    f"added token {fields['content']!r} has id {token_id}, but the next free id is {next_id}: "
                    "the folder's added tokens must follow the vocabulary without gaps"
                )
            token = AddedToken(**fields)
            (backend.add_special_tokens if fields.get("special") else backend.add_tokens)([token])
        for name, token in specials.items():
            if backend.token_to_id(token) is None:
                raise ValueError(
                    f"{name} {token!r} is not in the tokenizer's vocabulary; pass one of its tokens as {name}="
                )
        self.bos_token, self.eos_token = specials["bos_token"], specials["eos_token"]
        self.unk_token, self.pad_token = specials["unk_token"], specials["pad_token"]
        self.model_max_length = model_max_length
        registered = {t.content for t in backend.get_added_tokens_decoder().values()}
        for name, token in specials.items():  # matched whole in text, kept by decode unless skipped
            if token not in registered:
                # as transformers registers them: the start token matched after lowercasing, the others as typed
                backend.add_special_tokens([AddedToken(token, special=True, normalized=name == "bos_token")])
                registered.add(token)

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(
        cls,
        id_or_folder: str | os.PathLike,
        *,
        subfolder: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **overrides: Any,
    ) -> CLIPTokenizer:
        """Load from a folder or Hub id (`subfolder="tokenizer"` inside a pipeline folder).

        `overrides` replace the folder's settings: `model_max_length` and the special tokens
        (`pad_token="!"`, as SDXL's second tokenizer has).
        """
        unknown = set(overrides) - {"model_max_length", *SPECIAL_NAMES}
        if unknown:
            raise TypeError(
                f"CLIPTokenizer.from_pretrained got unsupported options {sorted(unknown)}; it takes "
                f"model_max_length and {', '.join(SPECIAL_NAMES)} (for others load transformers' CLIPTokenizer)"
            )
        wanted = (
            TOKENIZER_FILE,
            VOCAB_FILE,
            MERGES_FILE,
            CONFIG_FILE,
            SPECIAL_TOKENS_FILE,
            ADDED_TOKENS_FILE,
        )

        def select(files: Sequence[str]) -> list[str]:
            inside = subfolder and any(f.startswith(f"{subfolder}/") for f in files)
            prefix = f"{subfolder}/" if inside else ""
            present = [prefix + name for name in wanted if prefix + name in files]
            whole = prefix + TOKENIZER_FILE in present
            if not whole and not {prefix + VOCAB_FILE, prefix + MERGES_FILE} <= set(present):
                raise FileNotFoundError(
                    f"no {prefix}{TOKENIZER_FILE}, nor {prefix}{VOCAB_FILE} and {MERGES_FILE}"
                )
            return present

        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        root = resolve_folder(id_or_folder, select=select, **hub)
        folder = root / subfolder if subfolder and (root / subfolder).is_dir() else root
        settings = _read_settings(folder) | overrides
        specials = {name: settings.get(name) or DEFAULT_SPECIALS[name] for name in SPECIAL_NAMES}
        max_length = int(settings.get("model_max_length") or NO_LIMIT)
        name = os.fspath(id_or_folder)
        added = _added_tokens(folder, settings)
        if (folder / TOKENIZER_FILE).is_file():
            backend = _backend_from_file(folder / TOKENIZER_FILE)
        elif (folder / VOCAB_FILE).is_file() and (folder / MERGES_FILE).is_file():
            backend = _clip_backend(folder / VOCAB_FILE, folder / MERGES_FILE, specials["unk_token"])
        else:
            raise FileNotFoundError(
                f"no tokenizer in {folder}: expected {TOKENIZER_FILE}, or {VOCAB_FILE} and {MERGES_FILE}"
            )
        tokenizer = cls.__new__(cls)
        try:
            tokenizer._setup(backend, specials, max_length, added)
        except ValueError as err:
            raise ValueError(f"tokenizer in {folder}: {err}") from None
        tokenizer.name_or_path = name
        return tokenizer

    def save_pretrained(self, save_directory: str | os.PathLike, **_ignored: Any) -> tuple[str, ...]:
        """Write `vocab.json`, `merges.txt`, `tokenizer.json` and the settings (transformers' layout)."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        specials = {name: getattr(self, name) for name in SPECIAL_NAMES}
        config = {
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": self.model_max_length,
            "do_lower_case": True,
            "errors": "replace",
            "add_prefix_space": False,
            "clean_up_tokenization_spaces": False,
            **specials,
        }
        files = {
            TOKENIZER_FILE: self._backend.to_str(),
            CONFIG_FILE: json.dumps(config, indent=2, ensure_ascii=False) + "\n",
            SPECIAL_TOKENS_FILE: json.dumps(specials, indent=2, ensure_ascii=False) + "\n",
        }
        added = {t: i for t, i in self.get_vocab().items() if i >= self.vocab_size}
        if added:  # for readers of vocab.json + merges.txt (tokenizer.json holds them too)
            files[ADDED_TOKENS_FILE] = json.dumps(added, indent=2, ensure_ascii=False) + "\n"
        with tempfile.TemporaryDirectory(dir=folder, prefix=".tokenizer-") as staging:
            for written in self._backend.model.save(staging):  # vocab.json and merges.txt
                files[Path(written).name] = Path(written).read_text(encoding="utf-8")
        for name, text in files.items():
            atomic_write_text(folder / name, text)
        return tuple(str(folder / name) for name in files)

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    @property
    def bos_token_id(self) -> int:
        return self._backend.token_to_id(self.bos_token)

    @property
    def eos_token_id(self) -> int:
        return self._backend.token_to_id(self.eos_token)

    @property
    def unk_token_id(self) -> int:
        return self._backend.token_to_id(self.unk_token)

    @property
    def pad_token_id(self) -> int:
        return self._backend.token_to_id(self.pad_token)

    @property
    def all_special_ids(self) -> list[int]:
        return sorted({self.bos_token_id, self.eos_token_id, self.unk_token_id, self.pad_token_id})

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in SPECIAL_NAMES}

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys(getattr(self, name) for name in SPECIAL_NAMES))

    def add_tokens(self, new_tokens: Any, special_tokens: bool = False) -> int:
        """Add tokens matched whole in text (textual inversion's placeholders); returns how many were added.

        Plain strings are matched after lowercasing, like transformers' (special ones as written and
        left out by `decode(skip_special_tokens=True)`). Resize the text encoder's embeddings to
        `len(tokenizer)` afterwards."""
        from tokenizers import AddedToken

        items = [new_tokens] if isinstance(new_tokens, str) or hasattr(new_tokens, "content") else new_tokens
        tokens = []
        for item in items:
            if isinstance(item, str):
                tokens.append(AddedToken(item, special=special_tokens, normalized=not special_tokens))
            else:  # an AddedToken, tokenizers' or transformers' own
                options = ("single_word", "lstrip", "rstrip", "normalized")
                fields = {k: getattr(item, k) for k in options if hasattr(item, k)}
                tokens.append(
                    AddedToken(
                        item.content,
                        special=special_tokens or bool(getattr(item, "special", False)),
                        **fields,
                    )
                )
        add = self._backend.add_special_tokens if special_tokens else self._backend.add_tokens
        return add(tokens)

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """Ids of tokens; a token outside the vocabulary gets the unknown token's id."""
        if isinstance(tokens, str):
            found = self._backend.token_to_id(tokens)
            return self.unk_token_id if found is None else found
        return [self.convert_tokens_to_ids(t) for t in tokens]  # type: ignore[misc]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        if isinstance(ids, Integral):
            return self._backend.id_to_token(int(ids))
        return [self._backend.id_to_token(int(i)) for i in ids]

    # ------------------------------------------------------------------ encoding

    def tokenize(self, text: str) -> list[str]:
        """The BPE tokens of `text`, without the start and end tokens."""
        return self._backend.encode(text, add_special_tokens=False).tokens

    def __call__(
        self,
        text: str | Sequence[str],
        *,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
        return_attention_mask: bool | None = None,
        verbose: bool = True,
        **unsupported: Any,
    ) -> BatchEncoding:
        """`input_ids` and `attention_mask` of one text or a list of texts (transformers' arguments).

        padding: False / "do_not_pad", True / "longest" (to the longest text), "max_length".
        truncation: True / "longest_first" / "only_first" cut each text to `max_length` (default
        `model_max_length`) tokens, the end token kept. return_tensors: None (lists), "pt" or "np".
        """
        if unsupported:
            raise TypeError(
                f"CLIPTokenizer got unsupported arguments {sorted(unsupported)} (text pairs, offsets and "
                "overflowing tokens need transformers' CLIPTokenizer)"
            )
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
        pad_mode = _padding_mode(padding)
        truncate = _truncation_on(truncation)
        limit = max_length if max_length is not None else self.model_max_length
        if (truncate or pad_mode == "max_length") and limit >= NO_LIMIT:
            raise ValueError("truncation and padding='max_length' need max_length: this tokenizer has none")

        specials = 2 if add_special_tokens else 0
        if truncate and limit < specials:
            raise ValueError(f"max_length={limit} leaves no room for the start and end tokens")
        rows = []
        for encoding in self._backend.encode_batch(texts, add_special_tokens=False):
            ids = encoding.ids
            if truncate:
                ids = ids[: limit - specials]
            rows.append([self.bos_token_id, *ids, self.eos_token_id] if add_special_tokens else list(ids))
        if verbose and not truncate and any(len(r) > self.model_max_length for r in rows):
            logger.warning(
                "a text is %d tokens long, more than this tokenizer's model_max_length (%d): "
                "the model will not take it whole (pass truncation=True)",
                max(len(r) for r in rows),
                self.model_max_length,
            )

        target = {"max_length": limit, "longest": max(map(len, rows), default=0)}.get(pad_mode)
        masks = [[1] * len(r) for r in rows]
        if target is not None:
            for row, mask in zip(rows, masks):
                missing = target - len(row)
                row.extend([self.pad_token_id] * max(missing, 0))
                mask.extend([0] * max(missing, 0))
        out = {"input_ids": rows}
        if return_attention_mask is not False:
            out["attention_mask"] = masks
        return BatchEncoding({k: _as_tensor(v, return_tensors, single) for k, v in out.items()})

    def encode(self, text: str, *, add_special_tokens: bool = True, **kwargs: Any) -> Any:
        """The ids of one text (a list; a tensor with `return_tensors`)."""
        return self(text, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    # ------------------------------------------------------------------ decoding

    def decode(self, ids: Any, skip_special_tokens: bool = False, **_ignored: Any) -> str:
        """Text of `ids` (a list, 1-D tensor or array): tokens joined, each `</w>` a space, ends stripped."""
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        ids = [ids] if isinstance(ids, Integral) else ids
        text = self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        return text.replace(END_OF_WORD, " ").strip()

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False, **kwargs: Any) -> list[str]:
        return [self.decode(s, skip_special_tokens=skip_special_tokens, **kwargs) for s in sequences]

    def __repr__(self) -> str:
        return (
            f"CLIPTokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
            f"model_max_length={self.model_max_length}, pad_token={self.pad_token!r})"
        )


# The same class under transformers' other name; model_index.json files name either.
CLIPTokenizerFast = CLIPTokenizer


def _clip_backend(
    vocab: dict[str, int] | str | os.PathLike,
    merges: Sequence[str | Sequence[str]] | str | os.PathLike,
    unk_token: str,
) -> Any:
    """A `tokenizers.Tokenizer` running CLIP's text pipeline (see the module docstring)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    options = dict(unk_token=unk_token, end_of_word_suffix=END_OF_WORD, continuing_subword_prefix="")
    paths = [isinstance(x, (str, os.PathLike)) for x in (vocab, merges)]
    if all(paths):
        try:
            model = BPE.from_file(os.fspath(vocab), os.fspath(merges), **options)  # type: ignore[arg-type]
        except Exception as err:  # tokenizers raises plain Exceptions
            raise ValueError(f"cannot read the tokenizer files {vocab} and {merges}: {err}") from err
    elif not any(paths):
        model = BPE(dict(vocab), _pairs(merges), **options)  # type: ignore[arg-type]
    else:
        raise TypeError("vocab and merges must both be file paths or both be in-memory data")
    backend = Tokenizer(model)
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # the pattern matches the pieces to keep; what lies between them (spaces) goes
            pre_tokenizers.Split(Regex(PRE_TOKEN_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    return backend


def _backend_from_file(path: Path) -> Any:
    """The pipeline exactly as `tokenizer.json` describes it (its own truncation and padding off:
    `CLIPTokenizer.__call__` does those)."""
    from tokenizers import Tokenizer
    from tokenizers.models import BPE

    try:
        backend = Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises plain Exceptions
        raise ValueError(f"{path} is not a valid tokenizer.json: {err}") from err
    if not isinstance(backend.model, BPE):
        raise ValueError(f"{path} holds a {type(backend.model).__name__} model; CLIP's tokenizer is BPE")
    backend.no_truncation()
    backend.no_padding()
    return backend


def _pairs(merges: Iterable[str | Sequence[str]]) -> list[tuple[str, str]]:
    """Merge rules as pairs, from "a b" strings (as in merges.txt) or [a, b] lists."""
    pairs = []
    for n, merge in enumerate(merges, 1):
        parts = merge.split(" ") if isinstance(merge, str) else list(merge)
        if len(parts) != 2:
            raise ValueError(f"merge rule {n} is {merge!r}; expected two tokens")
        pairs.append((parts[0], parts[1]))
    return pairs


def _read_settings(folder: Path) -> dict[str, Any]:
    """`special_tokens_map.json` overlaid by `tokenizer_config.json`, tokens as plain strings."""
    settings: dict[str, Any] = {}
    for name in (SPECIAL_TOKENS_FILE, CONFIG_FILE):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object")
        settings.update({k: v for k, v in data.items() if v is not None})
    for name in SPECIAL_NAMES:  # saved as {"content": ..., "__type": "AddedToken"} by older versions
        if isinstance(settings.get(name), dict):
            settings[name] = settings[name].get("content")
    return settings


def _added_tokens(folder: Path, settings: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """Tokens added beyond the vocabulary (textual inversion's, say), as (id, AddedToken fields) by id:
    `added_tokens.json` (older folders: token -> id) and `tokenizer_config.json`'s
    `added_tokens_decoder` (id -> token and its matching options)."""
    found: dict[int, dict[str, Any]] = {}
    path = folder / ADDED_TOKENS_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            found.update(
                {int(i): dict(content=str(t), normalized=True, special=False) for t, i in data.items()}
            )
        except (ValueError, AttributeError, TypeError) as err:
            raise ValueError(f"{path} must map tokens to integer ids: {err}") from err
    decoder = settings.get("added_tokens_decoder") or {}
    options = ("content", "special", "normalized", "lstrip", "rstrip", "single_word")
    try:
        for key, entry in decoder.items():
            found[int(key)] = {k: entry[k] for k in options if k in entry}
            found[int(key)]["content"] = str(entry["content"])
    except (ValueError, AttributeError, TypeError, KeyError) as err:
        raise ValueError(
            f"{folder / CONFIG_FILE}: added_tokens_decoder must map ids to tokens: {err!r}"
        ) from err
    return sorted(found.items())


def _padding_mode(padding: bool | str) -> str | None:
    modes = {
        False: None,
        "do_not_pad": None,
        True: "longest",
        "longest": "longest",
        "max_length": "max_length",
    }
    if isinstance(padding, (bool, str)) and padding in modes:
        return modes[padding]
    raise ValueError(f'padding must be False, True, "longest", "max_length" or "do_not_pad", got {padding!r}')


def _truncation_on(truncation: bool | str | None) -> bool:
    if truncation in (None, False, "do_not_truncate"):
        return False
    if truncation in (True, "longest_first", "only_first"):
        return True
    raise ValueError(f'truncation must be True, False, "longest_first" or "only_first", got {truncation!r}')


def _as_tensor(rows: list[list[int]], return_tensors: str | None, single: bool) -> Any:
    if return_tensors is None:
        return rows[0] if single else rows
    if return_tensors not in ("pt", "np"):
        raise ValueError(f'return_tensors must be None, "pt" or "np", got {return_tensors!r}')
    if len({len(r) for r in rows}) > 1:
        raise ValueError(
            "texts of different lengths cannot form one tensor: pass padding=True or padding='max_length'"
        )
    if return_tensors == "np":
        import numpy as np

        return np.array(rows, dtype=np.int64)
    import torch

    return torch.tensor(rows, dtype=torch.long)
