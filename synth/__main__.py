"""`python -m synth ...` (e.g. `accelerate launch -m synth train ...`) is the `synth` command."""

import sys

from synth.commands.cli import main

sys.exit(main())
