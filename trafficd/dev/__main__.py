import sys

from trafficd.dev.cli import main

sys.exit(main())
