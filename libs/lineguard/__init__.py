"""lineguard: computer-vision inspection for production lines."""

__version__ = "0.1.0"
