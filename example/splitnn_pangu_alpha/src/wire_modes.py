"""The --compress choices (kept apart from the training code: the command line needs them without MindSpore)."""
# min_max6 is yaml/*_compressed.yaml as written; fp16 and min_max8 rewrite its min_max items (the
# 1-bit bit_pack of the attention mask is kept).
WIRE_MODES = ("none", "fp16", "min_max8", "min_max6")
