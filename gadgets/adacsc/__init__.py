"""adacsc: Gadgetron-compatible low-field MRI reconstruction with convolutional sparse coding
driven by learned, dictionary-agnostic sparsity level maps."""

__version__ = "0.1.0"
