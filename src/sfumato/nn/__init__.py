"""Building blocks shared by the models: resnets, attention, embeddings, resampling, UNet blocks.

Attribute names equal diffusers' checkpoint keys, so real weights load unchanged. Importing any
submodule imports torch; this package file itself imports nothing.
"""
