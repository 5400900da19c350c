"""Users: who exists, their ratings snapshots and statistics (UserService)."""
