"""The version of lightnets, apart so that any stage can name it without importing them all."""

__version__ = "0.1.0"
