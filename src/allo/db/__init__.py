"""Storage: PostgreSQL only, embedded or external."""
