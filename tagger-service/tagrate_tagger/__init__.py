"""The tagger service: runs the tagging model over uploaded images."""
