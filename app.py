"""The MMRole web app: talk with a character about an image, and browse an evaluation: `python app.py --help`."""
import sys

from mmrole.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
