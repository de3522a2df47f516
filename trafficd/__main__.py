import sys

from trafficd.cli import main

sys.exit(main())
