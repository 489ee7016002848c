"""Allo: self-hosted social customer care."""

__version__ = "0.1.0"
