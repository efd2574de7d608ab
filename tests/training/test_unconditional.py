"""Unconditional DDPM training on an image folder, saved as a DDPMPipeline folder."""

import json

import pytest
import torch
from PIL import Image

from sfumato.models.unet_2d import UNet2DModel
from sfumato.training.shapes import ShapesDataset
from sfumato.training.unconditional import ImageFolder, UnconditionalConfig, train_unconditional


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images" / "nested"
    folder.mkdir(parents=True)
    shapes = ShapesDataset(length=8, seed=1, size=20)
    for i in range(len(shapes)):
        shapes.image(i).save(folder / f"{i}.png")
    return tmp_path / "images"


def _config(data, output, **kw):
    defaults = dict(resolution=16, block_out_channels=(16, 32), batch_size=4, save_every=2, progress=False)
    return UnconditionalConfig(data_dir=data, output_dir=output, **(defaults | kw))


def test_trains_resumes_and_saves_a_ddpm_pipeline(image_folder, tmp_path):
    from diffusers import DDPMPipeline

    straight, result = train_unconditional(_config(image_folder, tmp_path / "a", steps=4))
    assert result.step == 4
    index = json.loads((straight / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and index["unet"] == ["diffusers", "UNet2DModel"]

    train_unconditional(_config(image_folder, tmp_path / "b", steps=2))
    resumed, result = train_unconditional(_config(image_folder, tmp_path / "b", steps=4))
    assert result.step == 4 and len(result.losses) == 2
    a = UNet2DModel.from_pretrained(straight, subfolder="unet").state_dict()
    b = UNet2DModel.from_pretrained(resumed, subfolder="unet").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    pipe = DDPMPipeline.from_pretrained(straight)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (16, 16)


def test_loss_goes_down(tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    for i in range(4):  # one image, four times: learnt in a few dozen steps
        Image.new("RGB", (16, 16), (220, 40, 40)).save(folder / f"{i}.png")
    cfg = _config(folder, tmp_path / "out", steps=30, learning_rate=3e-3, warmup_steps=1)
    losses = train_unconditional(cfg)[1].losses
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        ImageFolder(tmp_path / "missing", 16)
    with pytest.raises(ValueError, match="no images in"):
        ImageFolder(tmp_path, 16)
    with pytest.raises(ValueError, match="resolution must be a positive multiple of 2"):
        _config(tmp_path, tmp_path, resolution=15)
