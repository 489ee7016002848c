"""Answers to customers: the composer's rules and the outbox every outgoing message goes through."""
