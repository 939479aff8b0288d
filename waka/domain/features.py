"""The app features waka knows (`heroku features`, `heroku labs`): Heroku's names and words.

A feature's switch is an App event (`FeatureChanged`); this module is only the catalogue.
`general` features are listed by `heroku features`, the others (`beta`) by `heroku labs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID, uuid5

from waka.domain.errors import NotFound

_NAMESPACE = UUID("6f1c2a52-9d0e-4c59-9a57-1f3b8d7e4a10")  # feature ids are derived from names

PREBOOT = "preboot"
RUNTIME_DYNO_METADATA = "runtime-dyno-metadata"


@dataclass(frozen=True)
class Feature:
    name: str
    display_name: str
    description: str
    doc_url: str
    state: str  # general (heroku features) or beta (heroku labs)

    @property
    def id(self) -> str:
        return str(uuid5(_NAMESPACE, self.name))


CATALOGUE: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature(
            PREBOOT,
            "Preboot",
            "Provide seamless web dyno deploys",
            "https://devcenter.heroku.com/articles/preboot",
            "general",
        ),
        Feature(
            RUNTIME_DYNO_METADATA,
            "Dyno metadata",
            "Enable dyno metadata (app, dyno, release and slug) as environment variables",
            "https://devcenter.heroku.com/articles/dyno-metadata",
            "beta",
        ),
    )
}


def find_feature(name_or_id: str) -> Feature:
    """A feature by name or id, as Heroku's identity allows; NotFound names it."""
    for feature in CATALOGUE.values():
        if name_or_id in (feature.name, feature.id):
            return feature
    raise NotFound(f"Couldn't find that feature ({name_or_id}).")
