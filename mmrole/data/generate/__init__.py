"""New MMRole-Data with any OpenAI-compatible (vision) chat model: data_prep/gen_profiles.py and gen_dialogues.py.

- prompts.py: the generation prompts (ours: the paper's were not published; versioned and stamped into every record)
  and the parsing and checking of replies
- profiles.py: character profiles (detailed, condensed) and hypothetical characters
- dialogues.py: the three dialogue types about images
- runner.py: what both share: the endpoint's flags, planned calls sent through the client with a journal (resume),
  the generator stamp, the run's exit status
"""
