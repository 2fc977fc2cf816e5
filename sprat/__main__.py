import sys

from sprat.cli import main

sys.exit(main())
