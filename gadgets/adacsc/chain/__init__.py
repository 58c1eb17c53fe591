"""Chain XMLs: parsing, and running their Python nodes in process."""
