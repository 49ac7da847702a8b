"""advimage.detect."""
