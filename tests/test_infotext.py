from sfumato import infotext

# The example infotext from A1111's own format (modules/processing.py `create_infotext`).
A1111_EXAMPLE = (
    "a castle on a hill\nNegative prompt: blurry, low quality\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.75, Clip skip: 2, Version: v1.10.1"
)


def test_build_matches_a1111_layout_and_key_order():
    text = infotext.build(
        "a castle on a hill",
        negative_prompt="blurry, low quality",
        steps=20,
        sampler="DPM++ 2M",
        schedule_type="Karras",
        cfg_scale=7.0,
        seed=1234567890,
        width=512,
        height=768,
        model="v1-5-pruned-emaonly",
        denoising_strength=0.75,
        extra={"Version": "v1.10.1", "Clip skip": 2, "Model hash": "6ce0161689"},
    )
    assert text == A1111_EXAMPLE


def test_parse_a1111_text():
    params = infotext.parse(A1111_EXAMPLE)
    assert params["Prompt"] == "a castle on a hill"
    assert params["Negative prompt"] == "blurry, low quality"
    assert params["Steps"] == "20" and params["Sampler"] == "DPM++ 2M" and params["Seed"] == "1234567890"
    assert (params["Size-1"], params["Size-2"]) == ("512", "768")


def test_values_with_commas_are_quoted_and_round_trip():
    text = infotext.build(
        "multi\nline prompt",
        steps=4,
        sampler="Euler a",
        cfg_scale=1.5,
        seed=1,
        width=64,
        height=64,
        model="org/model, v2",
    )
    assert 'Model: "org/model, v2"' in text
    assert "Negative prompt" not in text
    params = infotext.parse(text)
    assert params["Model"] == "org/model, v2"
    assert params["Prompt"] == "multi\nline prompt"
    assert params["CFG scale"] == "1.5"


def test_older_form_without_schedule_type_parses():
    params = infotext.parse("cat\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 5, Size: 512x512")
    assert params["Sampler"] == "DPM++ 2M Karras" and params["Prompt"] == "cat"
