"""Ratings: a user's rating of an image (RatingService): added with the
image's bytes, set on a stored image, removed."""
