"""The labelling tools a review goes to and comes back from, one module per tool.

A format writes `ReviewItem`s in the tool's import format (plus the project set-up the tool
needs, as extra files) and reads the tool's export back into `Decision`s.
"""

from __future__ import annotations

from longicl.registry import Registry
from longicl.review.formats.argilla import Argilla
from longicl.review.formats.base import ReviewFormat
from longicl.review.formats.label_studio import LabelStudio

#: tool name -> its format; `Registry.recognises` tells an export by its contents (the first wins)
FORMATS: Registry[type[ReviewFormat]] = Registry(
    "review format", {LabelStudio.name: LabelStudio, Argilla.name: Argilla}
)

__all__ = ["FORMATS", "Argilla", "LabelStudio", "ReviewFormat"]
