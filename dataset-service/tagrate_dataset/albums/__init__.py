"""Albums: a user's ordered sets of stored images (the original's montage posts)."""
