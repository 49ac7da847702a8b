"""advimage.eval."""
