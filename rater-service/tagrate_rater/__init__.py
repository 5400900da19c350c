"""The rater service: a feature extractor plus per-user and global rating
heads that predict how much a user will like an image."""
