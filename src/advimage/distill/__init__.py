"""advimage.distill."""
