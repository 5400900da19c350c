"""Response models of the endpoints for tags people own (/addtags,
/removetags, /getimagetags?detail=true, /tagaliases, /tagimplications,
/taughttags): kept apart from ``schemas.py``."""

from __future__ import annotations

from pydantic import BaseModel, Field, RootModel


class SourcedTag(BaseModel):
    tag: str
    source: str = Field(description='`"manual"` (a person added it), `"model"` (the tagger) or `"taught"`.')
    score: float | None = Field(description="The model's or the taught classifier's score; null for a manual tag.")
    category: str | None = Field(
        None,
        description="The tag's category as the tagger's model gives it: `general`, `character`, `rating`, ... "
        "(a WD v3 or DeepDanbooru model); null when no model reported one.",
    )


class ImageTagDetail(BaseModel):
    """/getimagetags?detail=true: every tag with its source, manual first, then by score."""

    image: str
    original_name: str | None = Field(description="The file name the image was first stored under.")
    tags: list[SourcedTag]


class ChangedTags(BaseModel):
    """/addtags, /removetags: the image's tags after the change."""

    success: bool = True
    image: str
    tags: list[SourcedTag]


class TagAliasItem(BaseModel):
    alias: str
    tag: str


class TagAliases(BaseModel):
    aliases: list[TagAliasItem]


class TagImplicationItem(BaseModel):
    tag: str
    implies: str


class TagImplications(BaseModel):
    implications: list[TagImplicationItem]


class TaughtTagItem(BaseModel):
    tag: str
    examples: int = Field(description="Images with the tag by hand that it was learned from.")
    negatives: int = Field(description="Images the tag was removed from.")
    images_tagged: int = Field(description="Images it tags now.")
    precision_cv: float = Field(description="Precision at its threshold, by cross-validation.")
    trained_at: str


class TaughtTags(RootModel[list[TaughtTagItem]]):
    """GET /taughttags: a list, by tag."""
