"""Public names of `sfumato.training` → defining module (torch-free, read by the lazy `__init__`)."""

NAMES: dict[str, str] = {
    "ShapesDataset": "sfumato.training.shapes",
    "Scene": "sfumato.training.shapes",
    "sample_scene": "sfumato.training.shapes",
    "draw_scene": "sfumato.training.shapes",
    "parse_caption": "sfumato.training.shapes",
    "judge": "sfumato.training.shape_judge",
    "check_caption": "sfumato.training.shape_judge",
    "ImageCaptionFolder": "sfumato.training.captions",
    "find_captioned_images": "sfumato.training.captions",
    "resize_center_crop": "sfumato.training.image_transforms",
    "to_tensor": "sfumato.training.image_transforms",
    "TrainConfig": "sfumato.training.loop",
    "TrainResult": "sfumato.training.loop",
    "train": "sfumato.training.loop",
}
