"""Access tokens (TokenService): only SHA-256 hashes of the secrets, for the
gateway."""
