"""Public pipeline names -> defining module (torch-free, read by `sfumato/__init__.py`)."""

_P = "sfumato.pipelines."
NAMES: dict[str, str] = {
    "DiffusionPipeline": _P + "base",
    "DDPMPipeline": _P + "ddpm",
    "DDIMPipeline": _P + "ddpm",
    "ImagePipelineOutput": _P + "outputs",
    "StableDiffusionPipelineOutput": _P + "outputs",
    "StableDiffusionPipeline": _P + "stable_diffusion",
    "StableDiffusionImg2ImgPipeline": _P + "stable_diffusion_img2img",
    "StableDiffusionInpaintPipeline": _P + "stable_diffusion_inpaint",
    "StableDiffusionXLPipeline": _P + "stable_diffusion_xl",
    "StableDiffusionXLPipelineOutput": _P + "stable_diffusion_xl",
    "StableDiffusionXLImg2ImgPipeline": _P + "stable_diffusion_xl_img2img",
    "StableDiffusionXLInpaintPipeline": _P + "stable_diffusion_xl_inpaint",
    "AutoPipelineForText2Image": _P + "auto",
    "AutoPipelineForImage2Image": _P + "auto",
    "AutoPipelineForInpainting": _P + "auto",
}
