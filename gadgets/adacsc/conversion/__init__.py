"""Converters from other raw-data formats to ISMRMRD."""
