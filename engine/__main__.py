import sys

from engine.server import main

sys.exit(main())
