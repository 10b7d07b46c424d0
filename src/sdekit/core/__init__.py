"""The ground floor: the SDE family's closed forms, noise levels and grids, the denoiser D(y; sigma) and its
parametrisations, exact-score Gaussian mixtures, the one error type, and files and devices.
Imports nothing else from sdekit."""
