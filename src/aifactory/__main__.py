import sys

from aifactory.cli import main

sys.exit(main())
