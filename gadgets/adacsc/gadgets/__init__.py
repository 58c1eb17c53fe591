"""Gadgets: `gadget(connection)` functions usable as Gadgetron `<external>` Python nodes."""
