"""advimage.defend."""
