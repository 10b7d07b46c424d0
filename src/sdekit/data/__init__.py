"""Data: datasets held in memory in model space, and image files at a model's channels and resolution.
Imports only :mod:`sdekit.core`."""
