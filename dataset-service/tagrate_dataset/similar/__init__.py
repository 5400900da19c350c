"""Finding things: images similar in content (``vectors.py``, ``search.py``),
perceptual hashes (``hashing.py``), near-duplicate groups found in the
background (``duplicates.py``) and resolved by an admin (``resolve.py``),
and their gRPC face (``service.py``). See docs/similar.md."""
