"""adacsc: Gadgetron-compatible low-field MRI reconstruction with convolutional sparse coding
driven by learned, dictionary-agnostic sparsity level maps."""

from adacsc.runtime import configure_process

__version__ = "0.1.0"

configure_process()  # before anything imports torch (adacsc.runtime says why)
