"""Images (ImageService): the blob store (originals, resized copies, square
thumbnails), uploads, deletion, and the feature vectors cached per image."""
