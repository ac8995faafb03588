import sys

from skinr1.cli import main

sys.exit(main())
