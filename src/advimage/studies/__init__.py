"""advimage.studies: the papers' experiments and report builders, above the eval harness."""
