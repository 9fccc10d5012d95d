"""What every stage of the pipeline shares. Nothing here imports torch or transformers, or any other stage.

- prompts.py: THE protocol strings (role-play prompt, system prompts, judge prompt), byte-exact
- metrics.py: the eight metrics, parse_score_pair, score ratios and their aggregation
- list_format.py: Qwen-VL's list format as text ("Picture 1: <img>...</img>\n..."), dependency-free
- store.py: PathLike, append-only journals keyed by item, atomic writes (the one JSON writer), one run per folder
- cli.py: the command-line contract of every script: exit statuses, the argument parser (no prefix matching, no
  API keys on the command line), key redaction, one-line write errors
- problems.py: the items a run reported and skipped, and how they are listed
- images.py: an image's type from its bytes; whether an image file can be shown to a model
- progress.py: progress bars on stderr
"""
