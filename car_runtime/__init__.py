"""car-runtime: drive a physical AWS DeepRacer from a trained model, fast and fail-safe."""

__version__ = "0.1.0"
