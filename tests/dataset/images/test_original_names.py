"""An image's original name (the first file name it was stored under) over
real gRPC and through migration 0012, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text

from tagrate_common.protos import images_pb2, ratings_pb2, tags_pb2
from tagrate_dataset import models
from tagrate_dataset.checks import clean_filename
from tagrate_dataset.db import alembic_config, create_db_engine, migrate
from tests.dataset.calls import name_of
from tests.dataset.conftest import Served, image_file
from tests.imagefactory import make_image


def original_name(served: Served, image: str) -> str:
    return served.stub.tags.GetImageTags(tags_pb2.GetImageTagsRequest(image=image), timeout=30).original_name


def add_images(served: Served, *files: tuple[bytes, str]) -> list[str]:
    reply = served.stub.images.AddImages(
        images_pb2.AddImagesRequest(images=[image_file(data, name) for data, name in files]), timeout=30
    )
    return [added.image for added in reply.images]


def test_the_first_name_stays_and_later_uploads_do_not_overwrite_it(served: Served) -> None:
    first, second, rated = make_image(seed=41), make_image(seed=42), make_image(seed=43)
    [a, b] = add_images(served, (first, "C:\\Users\\me\\Pictures\\cat.jpg"), (second, "../../etc/dog.jpg"))
    assert original_name(served, a) == "cat.jpg"  # no folders, either separator
    assert original_name(served, b) == "dog.jpg"
    add_images(served, (first, "renamed.jpg"))
    served.stub.ratings.AddRating(
        ratings_pb2.AddRatingRequest(image=image_file(first, "again.jpg"), user="ann", rating=0.5), timeout=30
    )
    assert original_name(served, a) == "cat.jpg"
    # /addrating stores the name of an image it creates, and keeps it too.
    reply = served.stub.ratings.AddRating(
        ratings_pb2.AddRatingRequest(image=image_file(rated, "rated\x00\n.jpg"), user="ann", rating=1.0), timeout=30
    )
    assert original_name(served, reply.image) == "rated .jpg"  # no control characters
    add_images(served, (rated, "other.jpg"))
    assert original_name(served, reply.image) == "rated .jpg"


def test_an_image_stored_without_a_name_takes_the_first_name_it_is_given(served: Served) -> None:
    data = make_image(seed=44)
    [name] = add_images(served, (data, ""))
    assert name == name_of(data)
    assert original_name(served, name) == ""
    add_images(served, (data, "folder/"))  # nothing left of it: still no name
    add_images(served, (data, name.upper()))  # its own content hash, as old exports named files: no name
    assert original_name(served, name) == ""
    add_images(served, (data, "found.jpg"))
    add_images(served, (data, "later.jpg"))
    assert original_name(served, name) == "found.jpg"


def test_names_are_bounded_and_keep_their_extension() -> None:
    long = clean_filename("x" * 400 + ".jpeg")
    assert len(long) == 255 and long.endswith("x.jpeg")
    assert clean_filename("y" * 400) == "y" * 255
    assert clean_filename("  spaced\tname.png  ") == "spaced name.png"
    assert clean_filename("..") == clean_filename(".") == clean_filename("a/b/") == ""
    assert clean_filename("\u202eevil\u200b.png") == "evil.png"  # format characters dropped


@pytest.mark.fresh_database  # starts from an older schema
def test_migration_0012_keeps_the_last_path_part_of_stored_names(database_url: str) -> None:
    engine = create_db_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0007")  # the schema before original names were cleaned
        names = ["C:\\photos\\cat.jpg", "../up/dog.png", "plain.gif", "", "odd%_name.jpg", "dir/", "a\\b/c d.webp"]
        with engine.begin() as conn:
            for i, filename in enumerate(names):
                conn.execute(
                    text(
                        "INSERT INTO images (sha256, name, format, size_bytes, width, height, original_filename, "
                        "created_at, source) VALUES (:sha, :name, 'jpeg', 1, 1, 1, :filename, :now, '')"
                    ),
                    {"sha": f"{i:064x}", "name": f"{i:064x}.jpg", "filename": filename, "now": models.utc_now()},
                )
        migrate(engine)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT original_filename FROM images ORDER BY id")).scalars().all()
        assert stored == ["cat.jpg", "dog.png", "plain.gif", "", "odd%_name.jpg", "", "c d.webp"]
    finally:
        engine.dispose()
