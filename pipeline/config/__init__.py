"""Settings and the mapping model."""
