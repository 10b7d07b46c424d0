"""Tasks on a model: likelihood, SDEdit, inpainting / colorization / guidance, training, metrics and judges.
Imports every layer below it, never :mod:`sdekit.apps`."""
