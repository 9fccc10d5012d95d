"""OpenAI-compatible HTTP server over a local Qwen-VL checkpoint: `python serve.py --help`
(the same as `python -m mmrole.serve`)."""
import sys

from mmrole.serve.server import main

if __name__ == "__main__":
    sys.exit(main())
