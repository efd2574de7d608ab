import subprocess
import sys

import numpy as np

from sfumato.pipelines.outputs import ImagePipelineOutput, StableDiffusionPipelineOutput, finish


def test_output_fields_and_tuple_forms():
    images = np.zeros((1, 8, 8, 3))
    out = StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None)
    assert out.images is images and out[0] is images and out["images"] is images
    assert out.to_tuple() == (images,) and out.keys() == ["images"]  # None fields dropped, as diffusers
    assert finish(out, return_dict=True) is out
    # return_dict=False: every field, like diffusers' `(image, has_nsfw_concept)`
    as_tuple = finish(out, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2 and as_tuple[1] is None
    single = finish(ImagePipelineOutput(images=images), return_dict=False)
    assert len(single) == 1 and single[0] is images


def test_matches_diffusers_output_behaviour():
    from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput as Theirs

    images = np.ones((2, 4, 4, 3))
    ours, theirs = (
        C(images=images, nsfw_content_detected=[False, True]) for C in (StableDiffusionPipelineOutput, Theirs)
    )
    assert len(ours.to_tuple()) == len(theirs.to_tuple()) == 2
    assert ours[1] == theirs[1] == [False, True]


def test_pipelines_package_is_lazy():
    code = (
        "import sys, sfumato, sfumato.pipelines; a = 'torch' in sys.modules; "
        "import sfumato.pipelines.text; b = 'transformers' in sys.modules; "
        "sfumato.DDPMPipeline; print(a, b, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [
        "False",
        "False",
        "True",
    ]  # no torch until a name is used; text.py never imports transformers
