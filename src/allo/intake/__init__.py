"""Intake: every inbound event is stored raw before it is believed, then processed by jobs."""
