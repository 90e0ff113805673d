"""Forewarn: a host agent that opens preventive problem tickets before incidents.

The package root holds only the version (a foundation every module may import); it imports
nothing, so `import agent` costs nothing."""

__version__ = "0.1.0"
