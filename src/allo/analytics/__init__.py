"""Reporting, staffing and simulation: what the numbers say about the service."""
