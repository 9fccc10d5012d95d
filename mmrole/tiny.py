"""`python -m mmrole.tiny`: a tiny random Qwen-VL-Chat checkpoint (the real architecture and vocabulary) for tests, the
demo and trying the scripts without weights. The code is mmrole.demo.tiny; this command stays where the README, the
model_weights guide and users' scripts call it. `--family qwen2_5_vl` writes a tiny checkpoint of a current
vision-language family instead (mmrole.demo.tiny_vlm)."""

import sys
from typing import Optional, Sequence

from .demo import tiny, tiny_vlm


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The family decides which maker parses the rest (each has its own size flags)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    family = next((value.split("=", 1)[1] for value in argv if value.startswith("--family=")), None)
    if "--family" in argv[:-1]:
        family = argv[argv.index("--family") + 1]
    if family in tiny_vlm.FAMILIES:
        return tiny_vlm.main(argv)
    return tiny.main(argv)


if __name__ == "__main__":
    sys.exit(main())
