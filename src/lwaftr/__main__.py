import sys

from lwaftr.cli.main import main

sys.exit(main())
