"""The chat page's characters: a profiles folder in the MMRole-Data layout (any of its three folder levels), profiles
written in the page, and the problems of a damaged folder, named."""

import json
import shutil

import pytest

from mmrole.app.profiles import ProfileError, brief_introduction, load_character_book, written_character


def test_the_shared_profiles_folder_at_any_level(mmrole_data):
    for path in (mmrole_data, mmrole_data / "profiles", mmrole_data / "profiles" / "in-distribution"):
        book = load_character_book(path)
        assert len(book.characters) == 72 and book.problems == [] and book.root == mmrole_data
    iron_man = book.character("Iron Man")
    assert iron_man.script == "The Avengers"
    assert brief_introduction(iron_man.profile).startswith("Tony Stark, also known as Iron Man, is a central")
    assert "### Personality" not in brief_introduction(iron_man.profile)
    assert book.partners_of(book.character("Woody")) == ["Buzz Lightyear"]
    picked = book.pickable_images()
    assert "Friends/01.jpg" in picked and len(picked) > 100
    assert book.annotations.get("Friends/01.jpg")["place_info"] == "Monica's apartment"


def test_brief_introduction_without_headings_and_cut():
    assert brief_introduction("First paragraph.\n\nSecond.") == "First paragraph."
    assert brief_introduction("### Intro\n" + "x" * 900 + "\n### Next\ny", limit=100) == "x" * 99 + "…"


@pytest.fixture
def damaged(tmp_path, mmrole_data):
    """A copy of the shared profiles whose profiles.json lost Thor's profile and whose annotations.json is damaged."""
    split = tmp_path / "profiles" / "in-distribution"
    split.mkdir(parents=True)
    shutil.copy(mmrole_data / "profiles" / "in-distribution" / "roles.json", split / "roles.json")
    profiles = json.loads((mmrole_data / "profiles" / "in-distribution" / "profiles.json").read_text())
    del profiles["Thor"]
    (split / "profiles.json").write_text(json.dumps(profiles))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "annotations.json").write_text("[{")
    return tmp_path


def test_a_damaged_folder_names_its_problems_and_offers_the_rest(damaged):
    book = load_character_book(damaged)
    assert len(book.characters) == 71 and "Thor" not in book.characters
    with pytest.raises(ProfileError, match="'Thor' cannot be played: no profile in .*profiles.json"):
        book.character("Thor")
    with pytest.raises(ProfileError, match="unknown character 'Nobody'"):
        book.character("Nobody")
    assert any("no profile for 'Thor'" in p for p in book.problems)
    assert any("annotations.json: malformed JSON" in p for p in book.problems)
    assert book.pickable_images() == []


def test_folders_without_profiles_are_refused(tmp_path):
    with pytest.raises(ProfileError, match="no such folder"):
        load_character_book(tmp_path / "missing")
    with pytest.raises(ProfileError, match="no profiles here"):
        load_character_book(tmp_path)
    broken = tmp_path / "profiles" / "in-distribution"
    broken.mkdir(parents=True)
    (broken / "roles.json").write_text("{not json")
    book = load_character_book(tmp_path)
    assert book.characters == {} and "roles.json: malformed JSON at line 1" in book.problems[0]


@pytest.mark.parametrize("name, script, profile, message", [
    ("", "S", "p", "has no name"),
    ("N", " ", "p", "has no script"),
    ("two\nlines", "S", "p", "name must be one line"),
    ("human", "S", "p", "names the curious human"),
    ("N", "S", "  ", "profile of 'N' is empty"),
    ("N", "S", "x" * 20_001, "20001 characters; at most 20000"),
])
def test_a_malformed_written_profile_is_named(name, script, profile, message):
    with pytest.raises(ProfileError, match=message):
        written_character(name, script, profile)


def test_a_written_profile():
    character = written_character(" Ada ", "Hypothetical Characters", "### Brief Introduction\nA clockmaker.\n")
    assert (character.name, character.script, character.profile) == (
        "Ada", "Hypothetical Characters", "### Brief Introduction\nA clockmaker.")
