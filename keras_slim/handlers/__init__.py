"""Layer handlers: how channels flow through each layer type and how it is rebuilt."""
