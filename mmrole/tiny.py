"""`python -m mmrole.tiny`: a tiny random Qwen-VL-Chat checkpoint (the real architecture and vocabulary) for tests, the
demo and trying the scripts without weights. The code is mmrole.demo.tiny; this command stays where the README, the
model_weights guide and users' scripts call it."""

import sys

from .demo.tiny import main

if __name__ == "__main__":
    sys.exit(main())
