"""Vision models shared by the tagger and the rater's feature extractor.

Only this package imports torch (and onnxruntime), so processes that never
run a model -- the gateway, the dataset service -- do not pay for loading it.
"""

import os

# torch runs its CPU operators on GNU OpenMP, whose idle team threads spin
# before they sleep: by default long enough to keep a core busy through the
# whole gap between two requests' forward passes (measured on 2 cores: 1.84
# cores used with 5 ms gaps between passes, 1.6 with this), taking it from the
# request threads, the gateway and other services. Within a forward pass the
# gaps between operators are microseconds, so threads still spin there. Read
# once when torch loads; an explicit GOMP_SPINCOUNT wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
