"""adacsc: Gadgetron-compatible low-field MRI reconstruction with convolutional sparse coding
driven by learned, dictionary-agnostic sparsity level maps.

Importing the package changes nothing in the process; the entry points (the `adacsc` command
line, and the gadget modules Gadgetron's `<execute>` imports) make the process settings of
adacsc.runtime."""

__version__ = "0.1.0"
