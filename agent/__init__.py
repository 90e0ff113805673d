"""Forewarn: a host agent that opens preventive problem tickets before incidents."""

__version__ = "0.1.0"
