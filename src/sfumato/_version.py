__version__ = "0.1.0.dev0"

# The diffusers release whose on-disk format we write (`_diffusers_version` in config files).
# diffusers reads this key to decide on back-compat patches, so we state the format we match.
DIFFUSERS_FORMAT_VERSION = "0.42.1"
