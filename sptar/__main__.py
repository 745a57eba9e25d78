import sys

from sptar.cli import main

sys.exit(main())
