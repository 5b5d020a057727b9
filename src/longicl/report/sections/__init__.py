"""The report's sections, in order: each module's ``build(report)`` returns the variables of its
template ``templates/sections/<module>.md.j2``, or None to leave the section out."""

SECTIONS = (
    "front_matter",
    "provenance",
    "summary",
    "data",
    "method",
    "results",
    "quality",
    "strategies",
    "compliance",
    "environment",
    "limitations",
)
