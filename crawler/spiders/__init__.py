"""The crawler's spiders, one a file."""
