"""Accounts (a brand's workspace), their users and API tokens."""
