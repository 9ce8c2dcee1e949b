"""Topgrad's numpy backend. Cheap to import: numpy loads with `topgrad_numpy.backend`."""

__version__ = "0.1.0"
