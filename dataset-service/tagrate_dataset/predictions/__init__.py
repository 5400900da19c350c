"""Predictions: each user's current model's scores of the stored images, kept by the background scorer."""
