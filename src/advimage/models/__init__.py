"""advimage.models."""
