"""Vision models shared by the tagger and the rater's feature extractor.

Only this package imports torch (and onnxruntime), so processes that never
run a model -- the gateway, the dataset service -- do not pay for loading it.
"""
