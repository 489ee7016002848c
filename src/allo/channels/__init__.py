"""Channels: one module per network or format, each turning raw bytes into inbound messages."""
