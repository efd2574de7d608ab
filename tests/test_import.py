"""`import sfumato` must stay cheap: no torch, numpy or transformers until a name needs them."""

import subprocess
import sys

import sfumato


def test_import_loads_no_heavy_modules():
    code = (
        "import sys, sfumato; heavy = [m for m in ('torch', 'numpy', 'transformers', 'safetensors', "
        "'huggingface_hub', 'PIL') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_public_name_resolves():
    for name in sfumato.__all__:
        assert getattr(sfumato, name) is not None, name
    assert set(sfumato.__all__) <= set(dir(sfumato))


def test_unknown_name_is_an_attribute_error():
    try:
        sfumato.NoSuchPipeline  # noqa: B018
    except AttributeError as err:
        assert "NoSuchPipeline" in str(err)
    else:
        raise AssertionError("expected AttributeError")
