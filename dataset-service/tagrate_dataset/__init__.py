"""The dataset service: owns the database (users, images, ratings, tags,
cached feature vectors, predictions, trained snapshots, access tokens) and
the image blob store. It serves one gRPC service per resource
(``tagrate.dataset.v1.ImageService``, ``RatingService``, ...), all from one
process on one port; each resource is a package here with its servicer
(``service.py``: decode, call the domain, encode) beside the queries it owns:

- ``images/``: ImageService (AddImages, GetImage, GetThumbnail, DeleteImage,
  PutImageFeatures); the blob store, thumbnails, the feature-vector cache.
- ``ratings/``: RatingService (AddRating, UpdateRating, RemoveRating).
- ``library/``: LibraryService (GetUserData, GetImageNeighbours); the
  listing's plan (``listing.py``), its SQL text (``sql.py``), neighbours.
- ``tags/``: TagService (GetImageTags, ListTags, PutImageTags, UpdateTags);
  tagging images through the tagger.
- ``work/``: WorkService (VerifyDatasets, RetryFailedWork); the durable
  work queue, the background worker and how it yields to requests.
- ``users/``: UserService (GetUser, ListUsers, GetStats).
- ``training/``: TrainingDataService (StreamTrainingData,
  RecordTrainedSnapshot).
- ``tokens/``: TokenService (CreateToken, ListTokens, RevokeToken,
  AuthenticateToken).
- ``predictions/``: no RPC of its own: the background scorer that keeps
  each user's predictions current, which the library sorts by.

Shared by every resource: ``config.py``, ``db.py`` (engine, transactions,
upserts), ``models.py`` (tables), ``records.py`` (the user, image and tagger
model rows), ``snapshots.py`` (snapshot ids), ``checks.py``, ``peers.py``
(the tagger and rater clients) and ``server.py`` (registers every servicer).
"""
