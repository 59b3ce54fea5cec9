"""`python -m keras_slim.cli ...`: the same as the `keras-slim` command."""
import sys

from keras_slim.cli import main

sys.exit(main())
