"""raysys: choose the instruction-tuning tasks worth training on, at cluster scale on Ray."""
__version__ = "0.1.0"
