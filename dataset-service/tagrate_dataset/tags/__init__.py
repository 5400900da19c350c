"""Tags (TagService): the tagger model's scores per image, the tag list, and
tagging images through the tagger."""
