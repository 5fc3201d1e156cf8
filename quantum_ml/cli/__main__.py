"""``python3 -m quantum_ml.cli``: the same as ``qdb``."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
