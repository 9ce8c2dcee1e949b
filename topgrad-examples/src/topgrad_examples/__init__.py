"""Topgrad examples: four models trained on MNIST and Fashion-MNIST, and the `topgrad-train` command."""

__version__ = "0.1.0"
