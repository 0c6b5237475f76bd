"""One sub-package per stage, in the order data flows."""
