"""The characters the chat page offers: a profiles folder in the MMRole-Data layout, read with mmrole.data.raw, and
profiles a user writes in the page.

    ROOT/profiles/<split>/roles.json       {script: [character, ...]}
    ROOT/profiles/<split>/profiles.json    {character: condensed markdown profile}
    ROOT/images/annotations.json           the character-related images (offered to pick, with their annotations)

`--profiles` may name ROOT, ROOT/profiles or one split folder. Nothing here writes anything. A folder that cannot be
read at all raises ProfileError; a split, a file or a character that cannot be used becomes a line of `problems`
(file and reason), shown in the page, and the rest is offered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..common.prompts import HUMAN_SPEAKER
from ..common.store import PathLike
from ..data.raw import SPLITS, Annotations, Character, RawDataError, has_split, load_annotations, load_split

MAX_NAME_CHARS = 100
MAX_PROFILE_CHARS = 20_000
BRIEF_CHARS = 600
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
_HEADING = re.compile(r"^#{1,6}\s*(.+?)\s*$", re.M)


class ProfileError(ValueError):
    """A profile or a profiles folder that cannot be used; the message names the file or the field."""


@dataclass
class CharacterBook:
    """Every usable character of a profiles folder, the images that can be picked, and what could not be used.

    root: the data root (its `images/` holds the pickable images). characters: by name, in roles.json order.
    unusable: name -> why the character cannot be played (e.g. no profile). problems: lines for the page.
    """

    root: Optional[Path]
    characters: Dict[str, Character] = field(default_factory=dict)
    unusable: Dict[str, str] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)
    annotations: Annotations = field(default_factory=Annotations)

    @property
    def profiles(self) -> Dict[str, str]:
        return {name: c.profile for name, c in self.characters.items() if c.profile is not None}

    @property
    def images_dir(self) -> Optional[Path]:
        return self.root / "images" if self.root is not None else None

    def scripts(self) -> List[str]:
        return list(dict.fromkeys(c.script for c in self.characters.values()))

    def character(self, name: str) -> Character:
        """The character called `name`; ProfileError naming the folder when it is unknown or has no profile."""
        if name in self.characters:
            return self.characters[name]
        if name in self.unusable:
            raise ProfileError(f"{name!r} cannot be played: {self.unusable[name]}")
        where = f" in {self.root / 'profiles'}" if self.root is not None else ""
        raise ProfileError(f"unknown character {name!r}: no such name in the roles.json files{where}")

    def partners_of(self, character: Character) -> List[str]:
        """The other characters of the same script (inter-role dialogues pair two characters of one script)."""
        return [c.name for c in self.characters.values() if c.script == character.script and c.name != character.name]

    def pickable_images(self) -> List[str]:
        """Image paths relative to ROOT/images that annotations.json describes and that exist (the character-related
        images of the data; their annotations enter the prompt as in inference)."""
        if self.images_dir is None:
            return []
        return [image for image in self.annotations.images() if (self.images_dir / image).is_file()]


def _data_root(path: Path) -> Tuple[Path, List[str]]:
    """(ROOT, the splits to read) for a path naming ROOT, ROOT/profiles or ROOT/profiles/<split>."""
    if (path / "roles.json").is_file() and path.parent.name == "profiles":
        return path.parent.parent, [path.name]
    if path.name == "profiles" and any((path / split / "roles.json").is_file() for split in SPLITS):
        return path.parent, [split for split in SPLITS if has_split(path.parent, split)]
    return path, [split for split in SPLITS if has_split(path, split)]


def load_character_book(path: PathLike) -> CharacterBook:
    """The characters of a profiles folder. ProfileError when the path holds no profiles at all; damaged files and
    characters without a profile are listed in `problems` and left out."""
    path = Path(path)
    if not path.is_dir():
        raise ProfileError(f"{path}: no such folder")
    root, splits = _data_root(path)
    if not splits:
        raise ProfileError(f"{path}: no profiles here (expected profiles/<split>/roles.json and profiles.json of "
                           "MMRole-Data, with <split> in-distribution or out-of-distribution)")
    book = CharacterBook(root)
    for split in splits:
        try:
            raw, skips = load_split(root, split)
        except RawDataError as e:
            book.problems.append(str(e))
            continue
        for skip in skips:
            book.problems.append(str(skip))
        for character in raw.characters.values():
            if character.profile is None:
                book.unusable.setdefault(character.name, f"no profile in {raw.profiles_path}")
            elif character.name not in book.characters:
                book.characters[character.name] = character
    try:
        book.annotations, skips = load_annotations(root)
        book.problems += [str(skip) for skip in skips if skip.item != "*"]
    except RawDataError as e:
        book.problems.append(str(e))
    return book


def brief_introduction(profile: str, limit: int = BRIEF_CHARS) -> str:
    """What the page shows of a profile: its first section (the data's profiles open with a brief introduction,
    under headings that vary), or its first paragraph when it has no headings; cut at `limit` characters."""
    headings = list(_HEADING.finditer(profile))
    if headings:
        start = headings[0].end()
        end = headings[1].start() if len(headings) > 1 else len(profile)
        text = profile[start:end].strip()
    else:
        text = profile.strip().split("\n\n")[0].strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def written_character(name: str, script: str, profile: str) -> Character:
    """A character written in the page; ProfileError naming the field that is wrong."""
    name, script, profile = (name or "").strip(), (script or "").strip(), (profile or "").strip()
    for label, value in (("name", name), ("script", script)):
        if not value:
            raise ProfileError(f"the written profile has no {label}")
        if "\n" in value or len(value) > MAX_NAME_CHARS:
            raise ProfileError(f"the written profile's {label} must be one line of at most {MAX_NAME_CHARS} "
                               "characters")
    if name == HUMAN_SPEAKER:
        raise ProfileError(f"{HUMAN_SPEAKER!r} names the curious human in the prompts; choose another name")
    if not profile:
        raise ProfileError(f"the written profile of {name!r} is empty: describe the character (the data's profiles "
                           "have a brief introduction, personality, life story, relationships and catchphrases)")
    if len(profile) > MAX_PROFILE_CHARS:
        raise ProfileError(f"the written profile of {name!r} has {len(profile)} characters; at most "
                           f"{MAX_PROFILE_CHARS} are accepted")
    return Character(name, script, "written in the page", profile)
