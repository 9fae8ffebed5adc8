"""bench: a benchmark harness for disentangled and diffusion-based representation learning."""

__version__ = "0.1.0"
