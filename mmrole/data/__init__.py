"""MMRole-Data: from raw dialogues to the instruction samples of training and the test sets.

- raw.py: the raw layout (characters, profiles, image annotations, dialogues), loaded and validated; anything
  unusable becomes a `Skip` (file, item, reason) and the rest goes on
- samples.py: instruction samples (one per target turn, id `<dialogue id>_<turn index>`), their train and test
  records, and test-id files
- build.py: raw data -> train.json and the In-Test / Out-Test sets (data_prep/build_data.py)
- filter.py: the quality rules and their report (data_prep/filter_dialogues.py)
- generate/: new profiles and dialogues with any OpenAI-compatible vision model (data_prep/gen_*.py)
"""
