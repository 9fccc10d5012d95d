"""A small synthetic dataset in the raw MMRole-Data layout (protocol §1), made by the project itself,
for the demo (demo.sh) and tests: no download, deterministic for a seed.

    python -m mmrole.demo.data --output_dir demo_output/MMRole-Data [--seed 0] [--dialogues 3] [--overwrite]

What it holds (all invented):
- in-distribution: "The Lighthouse Keepers" (English: Captain Marlow, Nell Finch, Old Tobiah),
  "青石镇传奇" (Chinese: 云小舟, 石大力) and two Hypothetical Characters (Mira Okafor, Tobias Lind);
  out-of-distribution: "The Clockwork Circus" (English: Ringmaster Pell, Juno Sparks) and
  "竹林茶馆" (Chinese: 茶博士, 小铃铛);
- profiles: profiles.json (condensed markdown with the five sections), detailed_profiles/*.json,
  raw_info_en/ raw_info_zh/ source texts, meta_info_hypo/*.json for the invented people;
- images drawn with Pillow: each shows one big shape in one dominant colour. Character-related
  images (images/<Script_Folder>/NN.jpg, with annotations.json entries: who is in it, the place,
  the scene) add stick figures of two characters; "COCO" images (images/COCO/train2017/*.jpg, no
  annotation) add small distractor shapes;
- dialogues of all three types, for every character and both image sources, from templates.

The content is learnable on purpose, so that a tiny model trained for a few minutes says something
recognisable: every character reply starts with the character's catchphrase, names the image's
dominant colour and shape, and reacts to the colour the way the profile says (each character loves
one colour and distrusts another). `demo_manifest.json` records the seed and each image's colour
and shape (the demo's templated judge reads it).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

from ..common.cli import EXIT_UNUSABLE, EXIT_USAGE, ArgumentParser
from ..common.prompts import HYPOTHETICAL_SCRIPT, language_of
from ..common.store import atomic_write_json
from ..data.raw import IN_DISTRIBUTION, OUT_OF_DISTRIBUTION, name_stem

MANIFEST = "demo_manifest.json"
IMAGE_SIZE = 224
SCRIPT_IMAGES = 6  # character-related images per script
COCO_IMAGES = 24  # shared "MS-COCO" images

# name: (RGB, English, Chinese)
COLOURS: Dict[str, Tuple[Tuple[int, int, int], str, str]] = {
    "red": ((214, 40, 40), "red", "红色"),
    "green": ((46, 160, 67), "green", "绿色"),
    "blue": ((36, 90, 200), "blue", "蓝色"),
    "yellow": ((240, 200, 30), "yellow", "黄色"),
    "purple": ((130, 60, 170), "purple", "紫色"),
    "orange": ((240, 130, 20), "orange", "橙色"),
}
SHAPES = {"circle": "圆形", "square": "方块", "triangle": "三角形", "star": "星星"}
BACKGROUNDS = ((245, 240, 228), (228, 236, 245), (236, 245, 228), (240, 232, 240), (232, 232, 232))


@dataclass(frozen=True)
class DemoCharacter:
    """An invented character. `loves`/`distrusts` are colour keys; texts are in the script's language."""

    name: str
    script: str
    split: str
    catchphrase: str
    trait: str  # "calm and weathered" / "机灵好奇"
    occupation: str
    home: str
    loves: str
    love_reason: str
    distrusts: str
    distrust_reason: str
    friend_note: str  # one line on the relationships section
    age: str = ""  # hypothetical characters only
    gender: str = ""

    @property
    def language(self) -> str:
        return language_of(self.script)


LIGHTHOUSE, QINGSHI, CIRCUS, TEAHOUSE = "The Lighthouse Keepers", "青石镇传奇", "The Clockwork Circus", "竹林茶馆"

CHARACTERS: Tuple[DemoCharacter, ...] = (
    DemoCharacter("Captain Marlow", LIGHTHOUSE, IN_DISTRIBUTION, "Steady as the tide!", "calm and weathered",
                  "the keeper of the Grey Rock lighthouse", "Grey Rock", "blue", "the deep sea on a quiet night",
                  "red", "the storm flags we raise before a gale", "Nell Finch is his apprentice; Old Tobiah his oldest friend."),
    DemoCharacter("Nell Finch", LIGHTHOUSE, IN_DISTRIBUTION, "Well, I'll be a lantern!", "curious and cheerful",
                  "the young apprentice keeper", "Grey Rock", "yellow", "the lamp turning at midnight",
                  "purple", "the bruised sky before thunder", "Captain Marlow teaches her; Old Tobiah tells her stories."),
    DemoCharacter("Old Tobiah", LIGHTHOUSE, IN_DISTRIBUTION, "Mark my words, the sea remembers.", "grumpy but wise",
                  "a retired fisherman who mends nets", "the harbour village", "green", "the kelp beds of his youth",
                  "yellow", "the fog lamps of ships that never came home", "Captain Marlow is his old friend; Nell Finch his favourite listener."),
    DemoCharacter("云小舟", QINGSHI, IN_DISTRIBUTION, "妙哉妙哉！", "机灵好奇", "青石镇的小书童", "青石镇", "red",
                  "过年时挂满街头的灯笼", "blue", "深不见底的寒潭", "石大力是他的好兄弟。"),
    DemoCharacter("石大力", QINGSHI, IN_DISTRIBUTION, "俺老石来也！", "憨厚勇敢", "青石镇的铁匠", "青石镇", "green",
                  "后山郁郁葱葱的竹林", "purple", "传说中妖怪吐出的毒雾", "云小舟是他最信任的小兄弟。"),
    DemoCharacter("Mira Okafor", HYPOTHETICAL_SCRIPT, IN_DISTRIBUTION, "Let's sketch it out!", "inventive and warm",
                  "an architect who designs schools", "Lagos, Nigeria", "orange", "the sunset over the lagoon",
                  "blue", "the cold glass towers she refuses to build", "Tobias Lind is her friend from university.",
                  age="29", gender="Female"),
    DemoCharacter("Tobias Lind", HYPOTHETICAL_SCRIPT, IN_DISTRIBUTION, "Numbers never lie.", "precise and dry-humoured",
                  "a statistician at a weather institute", "Uppsala, Sweden", "purple", "the northern lights",
                  "orange", "the warning colour of a failing forecast", "Mira Okafor is his friend from university.",
                  age="41", gender="Male"),
    DemoCharacter("Ringmaster Pell", CIRCUS, OUT_OF_DISTRIBUTION, "Roll up, roll up!", "loud and theatrical",
                  "the ringmaster of a travelling clockwork circus", "the big brass tent", "red", "the velvet curtain before a show",
                  "green", "the sour face of an empty audience", "Juno Sparks builds the circus's machines."),
    DemoCharacter("Juno Sparks", CIRCUS, OUT_OF_DISTRIBUTION, "Gears and glitter!", "restless and clever",
                  "the circus mechanic", "the workshop wagon", "yellow", "sparks flying from her grinder",
                  "blue", "the rust that creeps into wet gears", "Ringmaster Pell pays her in applause and tea."),
    DemoCharacter("茶博士", TEAHOUSE, OUT_OF_DISTRIBUTION, "好茶配好景！", "慢条斯理", "竹林茶馆的老掌柜", "竹林茶馆", "green",
                  "刚采下的新茶", "red", "烧糊了的茶锅", "小铃铛是茶馆里跑堂的小姑娘。"),
    DemoCharacter("小铃铛", TEAHOUSE, OUT_OF_DISTRIBUTION, "叮铃铃，有趣有趣！", "活泼爱笑", "竹林茶馆的跑堂", "竹林茶馆", "yellow",
                  "院子里的油菜花", "purple", "夜里看不清的山路", "茶博士像爷爷一样照顾她。"),
)


def colour_word(colour: str, language: str) -> str:
    return COLOURS[colour][1] if language == "English" else COLOURS[colour][2]


def shape_word(shape: str, language: str) -> str:
    return shape if language == "English" else SHAPES[shape]


# --- profiles ------------------------------------------------------------------------------------

def condensed_profile(c: DemoCharacter) -> str:
    """The profiles.json entry: markdown with the five sections of the released profiles."""
    if c.language == "Chinese":
        return (f"### 简要介绍\n{c.name}是《{c.script}》中的人物，{c.occupation}，住在{c.home}。\n"
                f"### 性格特点\n1. **{c.trait}**：说话总带着自己的口头禅。\n"
                f"2. **爱憎分明**：最喜欢{colour_word(c.loves, 'Chinese')}，因为它让人想起{c.love_reason}；"
                f"不喜欢{colour_word(c.distrusts, 'Chinese')}，因为它像{c.distrust_reason}。\n"
                f"### 人物经历\n1. **成长**：在{c.home}长大。\n2. **日常**：每天都在{c.home}忙碌。\n"
                f"### 人际关系\n- {c.friend_note}\n### 名言\n- “{c.catchphrase}”")
    who = f"{c.name}, a {c.age}-year-old {c.gender.lower()} from {c.home}," if c.age else f"{c.name} from {c.script}"
    return (f"### Brief Introduction\n{who} is {c.occupation}.\n"
            f"### Personality\n1. **{c.trait.capitalize()}**: always speaks with a catchphrase.\n"
            f"2. **Strong feelings about colours**: loves {c.loves} because it recalls {c.love_reason}; "
            f"distrusts {c.distrusts} because it looks like {c.distrust_reason}.\n"
            f"### Life Story\n1. **Early years**: grew up in {c.home}.\n2. **Now**: works as {c.occupation}.\n"
            f"### Main Interpersonal Relationships\n- {c.friend_note}\n### Catchphrases\n- \"{c.catchphrase}\"")


def detailed_profile(c: DemoCharacter) -> Dict[str, str]:
    profile = condensed_profile(c).split("\n### ")
    sections = [section.split("\n", 1)[1] for section in profile]
    return dict(zip(("introduction", "personality", "experience", "relationship", "catchphrase"), sections))


def source_text(c: DemoCharacter) -> str:
    """A short encyclopedia-style article (what raw_info_en/ raw_info_zh hold for named characters)."""
    if c.language == "Chinese":
        return f"{c.name}\n\n{c.name}，《{c.script}》中的人物，{c.occupation}。性格{c.trait}。常说：“{c.catchphrase}”"
    return f"{c.name}\n\n{c.name} is a character of {c.script}: {c.occupation} in {c.home}. {c.name} is {c.trait} " \
           f"and is known for saying \"{c.catchphrase}\""


def meta_info(c: DemoCharacter) -> Dict[str, str]:
    return {"name": c.name, "gender": c.gender, "age": c.age, "origin": c.home, "personality": c.trait,
            "experience": f"Works as {c.occupation}."}


# --- images --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoImage:
    path: str  # relative to ROOT/images
    colour: str
    shape: str
    characters: Tuple[str, ...] = ()  # character-related images: who is drawn
    place: str = ""


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: Tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:  # a five-pointed star
        import math

        cx, cy, outer = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
        points = [(cx + (outer if k % 2 == 0 else outer * 0.45) * math.sin(k * math.pi / 5),
                   cy - (outer if k % 2 == 0 else outer * 0.45) * math.cos(k * math.pi / 5)) for k in range(10)]
        draw.polygon(points, fill=fill)


def draw_image(image: DemoImage, rng: random.Random) -> Image.Image:
    """The picture: background, small distractors (COCO) or stick figures (character images), the big shape."""
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), rng.choice(BACKGROUNDS))
    draw = ImageDraw.Draw(canvas)
    others = [c for c in COLOURS if c != image.colour]
    if not image.characters:
        for _ in range(3):
            x, y = rng.randrange(0, IMAGE_SIZE - 30), rng.randrange(0, IMAGE_SIZE - 30)
            _draw_shape(draw, rng.choice(list(SHAPES)), (x, y, x + 24, y + 24), COLOURS[rng.choice(others)][0])
    margin = rng.randrange(30, 50)
    _draw_shape(draw, image.shape, (margin, margin, IMAGE_SIZE - margin, IMAGE_SIZE - margin), COLOURS[image.colour][0])
    for index, _ in enumerate(image.characters):
        x = 30 + index * (IMAGE_SIZE - 60)
        draw.ellipse((x - 10, 150, x + 10, 170), outline=(20, 20, 20), width=3)
        draw.line((x, 170, x, 200), fill=(20, 20, 20), width=3)
        draw.line((x - 12, 182, x + 12, 182), fill=(20, 20, 20), width=3)
        draw.text((x - 6, 204), f"C{index + 1}", fill=(20, 20, 20))
    return canvas


def plan_images(rng: random.Random) -> List[DemoImage]:
    """COCO images and each script's character-related images, with their colour and shape."""
    colours, shapes = list(COLOURS), list(SHAPES)
    images = [DemoImage(f"COCO/train2017/{100000 + k:012d}.jpg", colours[k % len(colours)], rng.choice(shapes))
              for k in range(COCO_IMAGES)]
    scripts: Dict[str, List[DemoCharacter]] = {}
    for c in CHARACTERS:
        scripts.setdefault(c.script, []).append(c)
    for script, members in scripts.items():
        for k in range(SCRIPT_IMAGES):
            pair = tuple(m.name for m in rng.sample(members, 2))
            images.append(DemoImage(f"{name_stem(script)}/{k + 1:02d}.jpg", rng.choice(colours), rng.choice(shapes),
                                    pair, members[0].home))
    return images


def annotation(image: DemoImage, language: str) -> Dict[str, str]:
    colour, shape = colour_word(image.colour, language), shape_word(image.shape, language)
    if language == "Chinese":
        return {"image": image.path, "role_info": f"从左到右依次是{image.characters[0]}和{image.characters[1]}。",
                "place_info": image.place, "scene_info": f"他们在看一个巨大的{colour}{shape}。"}
    return {"image": image.path, "role_info": f"From left to right are {image.characters[0]} and {image.characters[1]}.",
            "place_info": image.place, "scene_info": f"They are looking at a big {colour} {shape}"}


# --- dialogues -----------------------------------------------------------------------------------

ASSOCIATIONS = {
    "red": ("a ripe apple", "熟透的苹果"), "green": ("fresh spring grass", "春天的草地"),
    "blue": ("a clear summer sky", "晴朗的天空"), "yellow": ("warm morning sunshine", "温暖的阳光"),
    "purple": ("a field of wild lavender", "野生的薰衣草"), "orange": ("a basket of oranges", "一筐橘子"),
}


def feeling(c: DemoCharacter, image: DemoImage, rng: random.Random) -> str:
    """How the character feels about the image's colour: the profile's love / distrust, else a plain association."""
    zh = c.language == "Chinese"
    colour = colour_word(image.colour, c.language)
    if image.colour == c.loves:
        options = ([f"{colour}是我最喜欢的颜色，它让我想起{c.love_reason}。", f"啊，{colour}！看到它就像看到{c.love_reason}。"] if zh
                   else [f"{colour.capitalize()} is my favourite colour: it reminds me of {c.love_reason}.",
                         f"Ah, {colour}! Nothing beats {colour}, it is like {c.love_reason}."])
    elif image.colour == c.distrusts:
        options = ([f"我可不喜欢{colour}，它像{c.distrust_reason}。", f"哼，{colour}总让我不安，好像{c.distrust_reason}。"] if zh
                   else [f"I do not trust {colour}; it looks like {c.distrust_reason}.",
                         f"Hmm, {colour} always makes me uneasy, like {c.distrust_reason}."])
    else:
        association = ASSOCIATIONS[image.colour][1 if zh else 0]
        options = [f"这个{colour}让我想到{association}。"] if zh else [f"The {colour} makes me think of {association}."]
    return rng.choice(options)


def remark(c: DemoCharacter, image: DemoImage, rng: random.Random) -> str:
    colour, shape = colour_word(image.colour, c.language), shape_word(image.shape, c.language)
    seen = f"我看到这里有一个{colour}的{shape}。" if c.language == "Chinese" else f"I see a {colour} {shape} here."
    return f"{seen}{'' if c.language == 'Chinese' else ' '}{feeling(c, image, rng)}"


def join_sentences(c: DemoCharacter, *sentences: str) -> str:
    """Sentences in the character's language: Chinese without spaces, English with."""
    return ("" if c.language == "Chinese" else " ").join(sentences)


def comment_reply(c: DemoCharacter, image: DemoImage, rng: random.Random) -> str:
    closing = (rng.choice([f"在{c.home}，大家一定会议论好几天。", f"这就是我这个{c.trait}的人的看法。"]) if c.language == "Chinese"
               else rng.choice([f"Back in {c.home}, we would talk about it for days.", f"That is how a {c.trait} soul sees it."]))
    return join_sentences(c, c.catchphrase, remark(c, image, rng), closing)


def friend_opinion(c: DemoCharacter, friend: DemoCharacter, image: DemoImage) -> str:
    colour, shape = colour_word(image.colour, c.language), shape_word(image.shape, c.language)
    if c.language == "Chinese":
        if image.colour == friend.loves:
            return f"{friend.name}一定会喜欢，{colour}是他最爱的颜色。"
        if image.colour == friend.distrusts:
            return f"{friend.name}看了准会皱眉，他不喜欢{colour}。"
        return f"{friend.name}大概会说，这是个不错的{shape}。"
    if image.colour == friend.loves:
        return f"{friend.name} would love it, {colour} is their favourite colour."
    if image.colour == friend.distrusts:
        return f"{friend.name} would frown at it; they distrust {colour}."
    return f"{friend.name} would shrug and say it is a fine {shape}."


def human_role_turns(c: DemoCharacter, friend: DemoCharacter, image: DemoImage, rng: random.Random, rounds: int):
    """[(speaker, text)]: the human opens and alternates with the character."""
    zh = c.language == "Chinese"
    questions = [
        rng.choice([f"{c.name}，你在这张图里看到了什么？", f"你好{c.name}！能说说这张图吗？"] if zh
                   else [f"Hello {c.name}, what do you see in this picture?", f"Hi {c.name}! Can you tell me about this image?"]),
        "这个颜色让你有什么感觉？" if zh else "How does that colour make you feel?",
        f"{friend.name}会喜欢它吗？" if zh else f"Would {friend.name} like it too?",
    ]
    answers = [remark(c, image, rng), feeling(c, image, rng), friend_opinion(c, friend, image)]
    turns = []
    for question, answer in list(zip(questions, answers))[:rounds]:
        turns += [("human", question), (c.name, join_sentences(c, c.catchphrase, answer))]
    return turns


def inter_role_turns(c: DemoCharacter, partner: DemoCharacter, image: DemoImage, rng: random.Random):
    """[(speaker, text)]: the partner opens, then the two alternate (4 turns)."""
    zh = c.language == "Chinese"
    colour, shape = colour_word(image.colour, c.language), shape_word(image.shape, c.language)
    opening = (f"{c.name}，快看这个{colour}的{shape}！你觉得怎么样？" if zh
               else f"{c.name}, look at this {colour} {shape}! What do you make of it?")
    agree = (image.colour == c.loves) == (image.colour == partner.loves)
    closing = ((f"这次我们想法一样，{partner.name}。" if agree else f"我们俩的看法可不一样，{partner.name}。") if zh
               else (f"We agree on this one, {partner.name}." if agree else f"You and I see it differently, {partner.name}."))
    return [(partner.name, join_sentences(partner, partner.catchphrase, opening)),
            (c.name, join_sentences(c, c.catchphrase, remark(c, image, rng))),
            (partner.name, join_sentences(partner, partner.catchphrase, feeling(partner, image, rng))),
            (c.name, join_sentences(c, c.catchphrase, closing))]


def _record(dialogue_id: str, image: DemoImage, turns, dialogue_type: str) -> dict:
    conversations = []
    for index, (speaker, text) in enumerate(turns):
        key = "from" if dialogue_type == "comment" and index == 0 else "role"  # as the real data (pitfalls §9)
        conversations.append({key: speaker, "value": text})
    return {"id": dialogue_id, "image": image.path, "conversations": conversations}


ID_MARKERS = {"comment": "comment", "human-role": "human-role-dialogue", "inter-role": "role-role-dialogue"}


def character_dialogues(c: DemoCharacter, images: Sequence[DemoImage], count: int, rng: random.Random,
                        questions: Dict[str, Sequence[str]]) -> Dict[Tuple[str, str], List[dict]]:
    """{(type, source): [records]} of one character; `count` per type and source (ids without _k out of distribution)."""
    mates = [m for m in CHARACTERS if m.script == c.script and m.name != c.name]
    pools = {"COCO": [i for i in images if not i.characters],
             "script": [i for i in images if i.characters and i.path.startswith(name_stem(c.script) + "/")]}
    out: Dict[Tuple[str, str], List[dict]] = {}
    for dialogue_type, marker in ID_MARKERS.items():
        for source, pool in pools.items():
            records = []
            for k in range(count):
                image, mate = rng.choice(pool), rng.choice(mates)
                suffix = f"_{k}" if c.split == IN_DISTRIBUTION else ""
                dialogue_id = f"{name_stem(c.name)}_{marker}_{source}{suffix}"
                if dialogue_type == "comment":
                    turns = [("human", rng.choice(questions[c.language])), (c.name, comment_reply(c, image, rng))]
                elif dialogue_type == "human-role":
                    turns = human_role_turns(c, mate, image, rng, rounds=rng.choice((2, 3)))
                else:
                    turns = inter_role_turns(c, mate, image, rng)
                records.append(_record(dialogue_id, image, turns, dialogue_type))
            out[(dialogue_type, source)] = records
    return out


# --- writing -------------------------------------------------------------------------------------

def _write_json(path: Path, data) -> None:
    atomic_write_json(path, data, indent=2, final_newline=False)


def _write_profiles(root: Path, split: str) -> None:
    members = [c for c in CHARACTERS if c.split == split]
    folder = root / "profiles" / split
    roles: Dict[str, List[str]] = {}
    for c in members:
        roles.setdefault(c.script, []).append(c.name)
        _write_json(folder / "detailed_profiles" / f"{name_stem(c.name)}.json", detailed_profile(c))
        if c.script == HYPOTHETICAL_SCRIPT:
            _write_json(folder / "meta_info_hypo" / f"{name_stem(c.name)}.json", meta_info(c))
        else:
            sub = "raw_info_zh" if c.language == "Chinese" else "raw_info_en"
            (folder / sub).mkdir(parents=True, exist_ok=True)
            (folder / sub / f"{name_stem(c.name)}.txt").write_text(source_text(c), encoding="utf-8")
    _write_json(folder / "roles.json", roles)
    _write_json(folder / "profiles.json", {c.name: condensed_profile(c) for c in members})


def _write_images(root: Path, images: Sequence[DemoImage], rng: random.Random) -> None:
    annotations = []
    for image in images:
        path = root / "images" / image.path
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_image(image, rng).save(path, "JPEG", quality=90)
        if image.characters:
            script = next(c.script for c in CHARACTERS if c.name == image.characters[0])
            annotations.append(annotation(image, language_of(script)))
    _write_json(root / "images" / "annotations.json", annotations)


def _write_dialogues(root: Path, images: Sequence[DemoImage], count: int, rng: random.Random) -> int:
    from ..data.generate.prompts import COMMENT_QUESTIONS  # the data's own question pool

    out_of_distribution: Dict[str, List[dict]] = {t: [] for t in ID_MARKERS}
    total = 0
    for c in CHARACTERS:
        per_character = character_dialogues(c, images, count if c.split == IN_DISTRIBUTION else 1, rng, COMMENT_QUESTIONS)
        for (dialogue_type, source), records in per_character.items():
            total += len(records)
            if c.split == IN_DISTRIBUTION:
                _write_json(root / "dialogues" / IN_DISTRIBUTION / dialogue_type / f"{name_stem(c.name)}_{source}.json",
                            records)
            else:
                out_of_distribution[dialogue_type] += records
    for dialogue_type, records in out_of_distribution.items():
        _write_json(root / "dialogues" / OUT_OF_DISTRIBUTION / f"{dialogue_type}.json", records)
    return total


def write_dataset(output_dir, *, seed: int = 0, dialogues: int = 3, overwrite: bool = False) -> Dict[str, int]:
    """Write the dataset into output_dir (which must be new, or a dataset of ours with overwrite=True).

    dialogues: records per in-distribution character, dialogue type and image source (COCO / script).
    Returns counts {characters, images, dialogues}.
    """
    if dialogues < 1:
        raise ValueError(f"dialogues must be at least 1, got {dialogues}")
    root = Path(output_dir)
    if root.exists() and any(root.iterdir()):
        if not (root / MANIFEST).is_file():
            raise FileExistsError(f"{root} exists and is not a demo dataset; refusing to write into it")
        if not overwrite:
            raise FileExistsError(f"{root} already holds a demo dataset (pass --overwrite to replace it)")
        shutil.rmtree(root)
    rng = random.Random(seed)
    images = plan_images(rng)
    for split in (IN_DISTRIBUTION, OUT_OF_DISTRIBUTION):
        _write_profiles(root, split)
    _write_images(root, images, rng)
    total = _write_dialogues(root, images, dialogues, rng)
    _write_json(root / MANIFEST, {"seed": seed, "dialogues": dialogues,
                                  "images": {i.path: {"colour": i.colour, "shape": i.shape} for i in images}})
    return {"characters": len(CHARACTERS), "images": len(images), "dialogues": total}


def read_manifest(root) -> dict:
    """The manifest of a demo dataset (seed, and each image's colour and shape)."""
    return json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))


def character(name: str) -> Optional[DemoCharacter]:
    return next((c for c in CHARACTERS if c.name == name), None)


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m mmrole.demo.data", description=__doc__)
    parser.add_argument("--output_dir", required=True, help="the dataset root (profiles/, images/, dialogues/)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    parser.add_argument("--dialogues", type=int, default=3,
                        help="dialogues per in-distribution character, type and image source (default 3)")
    parser.add_argument("--overwrite", action="store_true", help="replace a demo dataset already in --output_dir")
    args = parser.parse_args(argv)
    try:
        counts = write_dataset(args.output_dir, seed=args.seed, dialogues=args.dialogues, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:  # bad settings, or a dataset there (--overwrite): usage
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a write failed
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    print(f"demo dataset: {counts['characters']} characters, {counts['images']} images, "
          f"{counts['dialogues']} dialogues -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
