import sys

from calrl.cli.main import main

sys.exit(main())
