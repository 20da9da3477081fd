import sys

from joyride.cli import main

sys.exit(main())
