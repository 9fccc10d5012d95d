"""`python -m mmrole.serve`: the server's command line (mmrole.serve.server.main)."""

import sys

from .server import main

sys.exit(main())
