"""Models: networks, the Model object, bundles on disk and foreign formats (diffusers folders, converted
checkpoints, any wrapped network). Imports :mod:`sdekit.core`, :mod:`sdekit.data` and :mod:`sdekit.solvers`."""
