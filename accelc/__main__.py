"""``python -m accelc`` is the ``accelc`` command."""
import sys

from .cli import main

sys.exit(main())
