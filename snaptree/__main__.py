"""python3 -m snaptree --image PATH | --qmp SOCKET [--json | --svg]"""

import sys

from snaptree.tree import main

sys.exit(main())
