"""Conversations and their messages; threading decides which conversation a message joins."""
