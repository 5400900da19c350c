"""Albums (dataset service): the original's montage posts as its chat bot
and clients call them (/createmontagepost, /getmontageposts,
/getmontagepost, /getmontagepostneighbours, with its shapes) and the album
API beyond it (/albums: list, create, read, rename, delete, add, remove,
move).

A user token owns its albums: listing and creating act as its user (as
every ``user`` parameter does), and an album of another user is a 403
(checked by the dataset service against the caller handed to it). An admin
sees and changes every album.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import albums_api, montage_posts

# The montage posts first, then the album API: the order the schema lists them in.
router = APIRouter()
router.include_router(montage_posts.router)
router.include_router(albums_api.router)
