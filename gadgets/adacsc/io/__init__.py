"""ISMRMRD input and output: headers, datasets, images."""
