"""The dataset service: owns the database (users, images, ratings, tags,
cached feature vectors, trained snapshots) and the image blob store, and
serves ``tagrate.dataset.v1.DatasetService`` over gRPC."""
