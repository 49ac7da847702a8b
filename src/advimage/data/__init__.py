"""advimage.data."""
