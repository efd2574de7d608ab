"""Public pipeline names -> defining module (torch-free, read by `sfumato/__init__.py`)."""

_P = "sfumato.pipelines."
NAMES: dict[str, str] = {
    "DiffusionPipeline": _P + "base",
    "DDPMPipeline": _P + "ddpm",
    "DDIMPipeline": _P + "ddpm",
    "ImagePipelineOutput": _P + "outputs",
    "StableDiffusionPipelineOutput": _P + "outputs",
}
