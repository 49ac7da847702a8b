"""advimage.attacks."""
