"""The trainer service: trains per-user and global rating heads on cached
feature vectors, one job at a time, and publishes them to the rater."""
