import os
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub
import pytest

from fixtures.hub_cache import COMMIT, make_cache  # noqa: F401
from sfumato import hub
from sfumato.hub import HubError


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)


def test_local_folder_wins_without_network(tmp_path, no_network):
    (tmp_path / "config.json").write_text("{}")
    assert hub.resolve_folder(tmp_path) == tmp_path
    assert hub.resolve_file(tmp_path, "config.json") == tmp_path / "config.json"


def test_flat_layout_file_lookup(tmp_path, no_network):
    (tmp_path / "config.json").write_text("{}")
    assert hub.resolve_file(tmp_path, "config.json", subfolder="unet") == tmp_path / "config.json"
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    assert hub.resolve_file(tmp_path, "config.json", subfolder="unet") == tmp_path / "unet" / "config.json"


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match="no folder"):
        hub.resolve_folder(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no folder"):
        hub.resolve_folder("./models/mine/v1")


def test_offline_id_resolves_from_the_cache(offline_home, no_network):
    snapshot = make_cache(offline_home, "org/name", {"unet/config.json": "{}", "model_index.json": "{}"})
    assert hub.resolve_folder("org/name") == snapshot
    assert hub.resolve_file("org/name", "config.json", subfolder="unet").read_text() == "{}"


def test_revision_and_cache_dir(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    other = "fedcba9876543210fedcba9876543210fedcba98"
    make_cache(tmp_path, "org/name", {"a.json": "main"})
    make_cache(tmp_path, "org/name", {"a.json": "dev"}, ref="dev", commit=other)
    kw = {"cache_dir": tmp_path / "hub"}
    assert hub.resolve_file("org/name", "a.json", **kw).read_text() == "main"
    assert hub.resolve_file("org/name", "a.json", revision="dev", **kw).read_text() == "dev"
    assert hub.resolve_file("org/name", "a.json", revision=other, **kw).read_text() == "dev"


def test_offline_and_not_cached_says_where_it_looked(offline_home, no_network):
    with pytest.raises(HubError) as err:
        hub.resolve_folder("org/absent")
    message = str(err.value)
    assert "'org/absent'" in message
    assert str(offline_home / "hub" / "models--org--absent") in message
    assert "HF_HUB_OFFLINE" in message and "local folder" in message


def test_local_files_only_and_cached_but_incomplete(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    make_cache(tmp_path, "org/name", {"model_index.json": "{}"})
    with pytest.raises(HubError, match=r"lacks: no unet/config.json.*local_files_only=True"):
        hub.resolve_file("org/name", "config.json", subfolder="unet", local_files_only=True)


def test_online_download_fetches_only_the_selected_files(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    listing = [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin",
    ]
    asked = {}

    def fake_snapshot_download(
        repo_id, *, revision=None, cache_dir=None, token=None, allow_patterns=None, **kw
    ):
        if kw.get("local_files_only"):
            from huggingface_hub.errors import LocalEntryNotFoundError

            raise LocalEntryNotFoundError("not cached")
        asked["patterns"] = allow_patterns
        return str(make_cache(Path(cache_dir).parent, repo_id, dict.fromkeys(allow_patterns, "x")))

    monkeypatch.setattr(
        huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, revision=None: listing
    )
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    from sfumato.checkpoint import choose_weights

    def select(files):
        inside = [f.removeprefix("unet/") for f in files if f.startswith("unet/")]
        names, _, _ = choose_weights(inside, variant="fp16")
        return ["unet/config.json", *("unet/" + n for n in names)]

    hub.resolve_folder("org/name", select=select)
    assert asked["patterns"] == ["unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors"]


def test_unreachable_hub_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))

    def unreachable(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", unreachable)
    with pytest.raises(
        HubError, match=r"cannot reach the Hugging Face Hub to download 'org/name'.*HF_HUB_OFFLINE=1"
    ):
        hub.resolve_folder("org/name", select=lambda files: files)


def test_hf_hub_offline_set_before_start(tmp_path):
    """The real situation: the variable is in the environment when Python starts."""
    make_cache(tmp_path, "org/name", {"scheduler/scheduler_config.json": '{"a": 1}'})
    code = textwrap.dedent(
        """
        from sfumato.config import read_config_file
        print(read_config_file("org/name", "scheduler_config.json", subfolder="scheduler"))
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'a': 1}"
