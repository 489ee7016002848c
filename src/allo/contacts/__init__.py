"""Contacts: one customer across channels, with one identity per channel handle."""
