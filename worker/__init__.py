"""Pre-computation worker for watch-history analytics on Convex."""

__version__ = "0.1.0"
__all__ = ["__version__"]
