"""python3 -m snaptree --image PATH | --qmp SOCKET"""

import sys

from snaptree.tree import main

sys.exit(main())
