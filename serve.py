"""OpenAI-compatible HTTP server over a local Qwen-VL checkpoint: `python serve.py --help`
(the same as `python -m mmrole.serve`)."""
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mmrole.serve import main

if __name__ == "__main__":
    sys.exit(main())
