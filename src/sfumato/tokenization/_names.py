"""Public tokenizer names → defining module (torch-free, read by `sfumato/__init__.py`)."""

NAMES: dict[str, str] = {
    "CLIPTokenizer": "sfumato.tokenization.clip",
    "CLIPTokenizerFast": "sfumato.tokenization.clip",
    "BatchEncoding": "sfumato.tokenization.clip",
}
