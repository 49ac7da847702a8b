"""advimage.train."""
