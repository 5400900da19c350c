"""Predictions: each user's current model's scores of the stored images, kept
current by the background scorer. No RPC of its own: the library sorts by
them, and recording a trained model or caching a vector queues them."""
