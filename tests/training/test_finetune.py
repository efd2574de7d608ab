"""Fine-tuning a pipeline's UNet on a caption folder: only the UNet changes, the folder stays loadable."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sfumato.training.finetune import FinetuneConfig, check_pipeline_folder, finetune
from sfumato.training.shapes import ShapesDataset
from sfumato.training.text_to_image import PRESETS, ShapesTrainConfig, train_shapes


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    torch.set_num_threads(1)
    output = tmp_path_factory.mktemp("base")
    cfg = ShapesTrainConfig(output_dir=output, model=PRESETS["tiny"], vae_steps=2, unet_steps=2, batch_size=4,
                            vae_batch_size=4, num_images=8, progress=False)  # fmt: skip
    return train_shapes(cfg)[0]


@pytest.fixture
def caption_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    shapes = ShapesDataset(length=6, seed=5, size=24)  # not the model's size: resized and cropped to it
    with (folder / "metadata.jsonl").open("w") as f:
        for i in range(len(shapes)):
            shapes.image(i).save(folder / f"{i}.png")
            f.write(json.dumps({"file_name": f"{i}.png", "text": shapes.caption(i)}) + "\n")
    return folder


def test_finetune_changes_only_the_unet(base_model, caption_folder, tmp_path):
    cfg = FinetuneConfig(model=base_model, data_dir=caption_folder, output_dir=tmp_path / "out", steps=3,
                         batch_size=2, learning_rate=1e-3, save_every=2, progress=False)  # fmt: skip
    output, result = finetune(cfg)
    assert result.step == 3
    before = load_file(base_model / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(output / "unet" / "diffusion_pytorch_model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    for name in ("vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (output / name).read_bytes() == (base_model / name).read_bytes()
    assert not (output / "training" / "vae").exists()  # the source's training state is not copied

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(output, safety_checker=None)
    torch.testing.assert_close(pipe.unet.state_dict()["conv_in.weight"], after["conv_in.weight"])

    resumed, result = finetune(FinetuneConfig(**{**cfg.__dict__, "steps": 5}))
    assert result.step == 5 and len(result.losses) == 2  # continued from the step-3 checkpoint


def test_folder_without_model_index_is_refused(tmp_path, caption_folder):
    with pytest.raises(ValueError, match="has no model_index.json"):
        finetune(
            FinetuneConfig(model=tmp_path, data_dir=caption_folder, output_dir=tmp_path / "o", progress=False)
        )
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "DDPMPipeline", "unet": ["x", "y"]})
    )
    with pytest.raises(ValueError, match="not a text-to-image pipeline"):
        check_pipeline_folder(tmp_path)


def test_uncaptioned_images_are_refused(base_model, tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    cfg = FinetuneConfig(model=base_model, data_dir=tmp_path, output_dir=tmp_path / "o", progress=False)
    with pytest.raises(ValueError, match="have no caption"):
        finetune(cfg)
