"""A low-field scanner simulator writing ISMRMRD files with stored ground truth."""
