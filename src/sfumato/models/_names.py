"""Public model names → defining module (torch-free, read by `sfumato/__init__.py`)."""

NAMES: dict[str, str] = {
    "ModelMixin": "sfumato.models.base",
    "UNet2DConditionModel": "sfumato.models.unet_2d_condition",
    "UNet2DConditionOutput": "sfumato.models.outputs",
    "UNet2DModel": "sfumato.models.unet_2d",
    "UNet2DOutput": "sfumato.models.outputs",
    "AutoencoderKL": "sfumato.models.autoencoder_kl",
    "AutoencoderKLOutput": "sfumato.models.outputs",
    "DecoderOutput": "sfumato.models.outputs",
    "DiagonalGaussianDistribution": "sfumato.models.distributions",
    "CLIPTextModel": "sfumato.models.clip_text",
    "CLIPTextModelWithProjection": "sfumato.models.clip_text",
    "BaseModelOutputWithPooling": "sfumato.models.outputs",
    "CLIPTextModelOutput": "sfumato.models.outputs",
}
