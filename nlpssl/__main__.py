"""`python -m nlpssl` (also what `torchrun -m nlpssl` and `accelerate launch -m nlpssl` run)."""

import sys

from nlpssl.cli import main

sys.exit(main())
